"""What the pipeline does with the load, seen from outside like any other government system.

- End-to-end latency: from an accepted POST to the first `scoring.score-latest.v1` record of the
  event's team whose event-time watermark (`as_of_event_time`) reaches the event's `occurred_at`.
- Consumer lag measured from the broker (end offset − committed offset per group), outbox
  backlog scraped from every service's `/metrics`, the national `activities` indicator (how
  many activity facts scoring holds) polled from the scoring API, and the records published on
  `score-updated` and `alert-raised` (end offsets), all over time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families

from common.kafka import kafka_client_options
from common.topics import ALERT_RAISED, CONSUMER_GROUPS, SCORE_LATEST, SCORE_UPDATED

# Keys of score-latest are `subject_type:subject_id:period`; a team's monthly record is enough.
_TEAM_MONTH_KEY = re.compile(rb"^team:([0-9a-f-]{36}):\d{4}-\d{2}$")


@dataclass
class EndToEnd:
    """Pending accepted events per team; a team's score record whose watermark reaches an
    event's `occurred_at` completes that event."""

    t0: float
    pending: dict[str, list[tuple[datetime, float]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    # (accepted at, seconds since t0; latency ms)
    latencies_ms: list[tuple[float, float]] = field(default_factory=list)
    records_seen: int = 0
    team_records: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def accepted(self, event: dict[str, Any], at: float) -> None:
        self.pending[event["team_id"]].append((datetime.fromisoformat(event["occurred_at"]), at))

    def score_seen(self, team_id: str, watermark: datetime | None, at: float) -> None:
        waiting = self.pending.get(team_id)
        if not waiting:
            return
        keep = []
        for occurred, accepted_at in waiting:
            if watermark is None or occurred <= watermark:
                self.latencies_ms.append(
                    (round(accepted_at - self.t0, 3), (at - accepted_at) * 1000)
                )
            else:
                keep.append((occurred, accepted_at))
        if keep:
            self.pending[team_id] = keep
        else:
            del self.pending[team_id]

    def unmatched(self) -> int:
        return sum(len(v) for v in self.pending.values())

    async def follow(self, bootstrap: str, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            **kafka_client_options(),
        )
        await consumer.start()
        try:
            partitions = (await partition_map(bootstrap, [SCORE_LATEST.name]))[SCORE_LATEST.name]
            tps = [TopicPartition(SCORE_LATEST.name, p) for p in partitions]
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            for tp in tps:  # resolve the positions now, before any load is sent
                await consumer.position(tp)
            self.ready.set()
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=5000)
                now = time.time()
                for records in batch.values():
                    self.records_seen += len(records)
                    for record in records:
                        self._record(record.key, record.value, now)
        finally:
            self.ready.set()
            await consumer.stop()

    def _record(self, key: bytes | None, value: bytes | None, at: float) -> None:
        if value is None or key is None:
            return
        match = _TEAM_MONTH_KEY.match(key)
        if match is None:
            return
        team_id = match.group(1).decode()
        if team_id not in self.pending:
            return
        self.team_records += 1
        raw = json.loads(value).get("as_of_event_time")
        self.score_seen(team_id, datetime.fromisoformat(raw) if raw else None, at)


def _partitions_of(described: list[Any]) -> dict[str, list[int]]:
    result: dict[str, list[int]] = {}
    for topic in described:
        name = topic.get("topic", topic.get("name"))
        parts = [p.get("partition", p.get("partition_index")) for p in topic.get("partitions", [])]
        result[str(name)] = sorted(int(p) for p in parts if p is not None)
    return result


async def partition_map(bootstrap: str, topics: list[str]) -> dict[str, list[int]]:
    """Partition ids per topic, from the broker's metadata."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka_client_options())
    await admin.start()
    try:
        return _partitions_of(await admin.describe_topics(topics))
    finally:
        await admin.close()


def _gauge_sum(text: str, name: str, label: str) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                totals[sample.labels.get(label, "")] += sample.value
    return dict(totals)


class BrokerLag:
    """End offset − committed offset for every consumer group of the platform."""

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._known: dict[str, list[int]] = {}

    async def __aenter__(self) -> BrokerLag:
        self._admin = AIOKafkaAdminClient(
            bootstrap_servers=self._bootstrap, **kafka_client_options()
        )
        await self._admin.start()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap, group_id=None, **kafka_client_options()
        )
        await self._consumer.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
        if self._admin is not None:
            await self._admin.close()

    async def _partitions(self, topic: str) -> list[int]:
        assert self._admin is not None
        if topic not in self._known:
            self._known.update(_partitions_of(await self._admin.describe_topics([topic])))
        return self._known.get(topic, [])

    async def end_offsets(self, topics: list[str]) -> dict[str, int]:
        assert self._consumer is not None
        tps = []
        for topic in topics:
            parts = await self._partitions(topic)
            tps += [TopicPartition(topic, p) for p in parts]
        ends = await self._consumer.end_offsets(tps)
        totals: dict[str, int] = defaultdict(int)
        for tp, offset in ends.items():
            totals[tp.topic] += offset
        return dict(totals)

    async def lag(self) -> dict[str, int]:
        """`group/topic` → records behind; only the groups the platform declares."""
        assert self._admin is not None and self._consumer is not None
        result: dict[str, int] = {}
        for group, specs in CONSUMER_GROUPS.items():
            committed = await self._admin.list_consumer_group_offsets(group)
            tps = []
            for spec in specs:
                parts = await self._partitions(spec.name)
                tps += [TopicPartition(spec.name, p) for p in parts]
            ends = await self._consumer.end_offsets(tps)
            for tp, end in ends.items():
                meta = committed.get(tp)
                done = meta.offset if meta is not None and meta.offset >= 0 else 0
                key = f"{group}/{tp.topic}"
                result[key] = result.get(key, 0) + max(end - done, 0)
        return result


async def national_activities(client: httpx.AsyncClient, scoring_url: str, period: str) -> int:
    """How many activity facts scoring holds for the nation in `period` (0 before any)."""
    reply = await client.get(f"{scoring_url}/v1/indicators/national/VN", params={"period": period})
    if reply.status_code == 404:
        return 0
    reply.raise_for_status()
    return int(reply.json()["indicators"].get("activities", 0))


@dataclass
class Pipeline:
    """Samples lag, outbox backlog, the scored count and the score / alert records published
    every `interval` seconds."""

    urls: dict[str, str]
    headers: dict[str, str]
    lag: BrokerLag
    period: str
    t0: float
    series: list[dict[str, Any]] = field(default_factory=list)

    async def sample(self, client: httpx.AsyncClient) -> dict[str, Any]:
        row: dict[str, Any] = {"t": round(time.time() - self.t0, 1), "lag": {}, "backlog": {}}
        with contextlib.suppress(Exception):
            row["lag"] = await self.lag.lag()
        with contextlib.suppress(Exception):
            ends = await self.lag.end_offsets([SCORE_UPDATED.name, ALERT_RAISED.name])
            row["scores_published"] = ends.get(SCORE_UPDATED.name)
            # Every change of an alert (raised, resolved) is one record: the "alerted" count.
            row["alerts_published"] = ends.get(ALERT_RAISED.name)
        for url in self.urls.values():
            try:
                text = (await client.get(f"{url}/metrics")).text
            except httpx.HTTPError:
                continue
            row["backlog"].update(_gauge_sum(text, "cdt_outbox_backlog", "service"))
        try:
            row["scored"] = await national_activities(client, self.urls["scoring"], self.period)
        except (httpx.HTTPError, KeyError, ValueError):
            row["scored"] = None
        return row

    async def run(self, stop: asyncio.Event, interval: float = 1.0) -> None:
        async with httpx.AsyncClient(timeout=10, headers=self.headers) as client:
            while not stop.is_set():
                self.series.append(await self.sample(client))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=interval)

    def last(self) -> dict[str, Any]:
        return self.series[-1] if self.series else {"lag": {}, "backlog": {}, "scored": None}
