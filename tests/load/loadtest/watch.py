"""End-to-end latency: from an accepted POST to the `scoring.score-latest.v1` record that
includes it, seen by a plain subscriber like any other government system; plus lag and outbox
backlog scraped from every service's /metrics over time."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer
from prometheus_client.parser import text_string_to_metric_families

from common.topics import SCORE_LATEST


@dataclass
class EndToEnd:
    """Pending accepted events per team; a team's score record whose event-time watermark
    reaches an event's `occurred_at` completes that event."""

    pending: dict[str, list[tuple[datetime, float]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    latencies_ms: list[tuple[float, float]] = field(default_factory=list)
    records_seen: int = 0
    started: float = field(default_factory=time.time)

    def accepted(self, event: dict[str, Any], at: float) -> None:
        self.pending[event["team_id"]].append((datetime.fromisoformat(event["occurred_at"]), at))

    def score_seen(self, team_id: str, watermark: datetime | None, at: float) -> None:
        waiting = self.pending.get(team_id)
        if not waiting:
            return
        done = [w for w in waiting if watermark is None or w[0] <= watermark]
        for _, accepted_at in done:
            self.latencies_ms.append((at - self.started, (at - accepted_at) * 1000))
        self.pending[team_id] = [w for w in waiting if w not in done]

    def unmatched(self) -> int:
        return sum(len(v) for v in self.pending.values())

    async def follow(self, bootstrap: str, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            SCORE_LATEST.name,
            bootstrap_servers=bootstrap,
            group_id=None,
            auto_offset_reset="latest",
        )
        await consumer.start()
        try:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=200)
                now = time.time()
                for records in batch.values():
                    for record in records:
                        self._record(record.value, now)
        finally:
            await consumer.stop()

    def _record(self, value: bytes | None, at: float) -> None:
        if value is None:
            return
        score = json.loads(value)
        self.records_seen += 1
        if score.get("subject_type") != "team":
            return
        raw = score.get("as_of_event_time")
        self.score_seen(score["subject_id"], datetime.fromisoformat(raw) if raw else None, at)


def _gauge_sum(text: str, name: str, label: str) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                totals[sample.labels.get(label, "")] += sample.value
    return dict(totals)


async def scrape_pipeline(
    urls: dict[str, str],
    stop: asyncio.Event,
    series: list[dict[str, Any]],
    started: float,
    interval: float = 2.0,
) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        while not stop.is_set():
            row: dict[str, Any] = {"t": round(time.time() - started, 1), "lag": {}, "backlog": {}}
            for service, url in urls.items():
                try:
                    text = (await client.get(f"{url}/metrics")).text
                except httpx.HTTPError:
                    continue
                row["lag"].update(_gauge_sum(text, "cdt_consumer_lag", "group"))
                row["backlog"].update(_gauge_sum(text, "cdt_outbox_backlog", "service"))
            series.append(row)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
