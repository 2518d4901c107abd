"""Open-model load: requests start on a fixed schedule, whatever the server's pace.

Latency is measured from each request's *scheduled* start, so a slow server cannot hide its
queueing (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from common.contracts.activities import OUTCOMES, SKILLS

KINDS = ("household_visit", "household_visit", "household_visit", "group_session", "support_desk")
AUDIENCES = ("elderly", "small_traders", "families_with_children", "youth", "farmers")


@dataclass(frozen=True)
class TeamRef:
    team_id: str
    member_ids: tuple[str, ...]
    province: str


@dataclass(frozen=True)
class LoadProfile:
    rate: float = 1000.0  # events per second offered
    duration_s: float = 60.0
    batch_size: int = 100  # 1 = single-event endpoint
    duplicate_share: float = 0.05
    invalid_share: float = 0.02
    seed: int = 7


@dataclass
class LoadResult:
    latencies_ms: list[tuple[float, float]] = field(default_factory=list)  # (t, ms) per request
    outcomes: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    http_status: Counter[int] = field(default_factory=Counter)
    accepted_per_second: Counter[int] = field(default_factory=Counter)
    offered: int = 0
    late_starts: int = 0


class ActivityFactory:
    def __init__(self, *, teams: list[TeamRef], profile: LoadProfile) -> None:
        self._teams = teams
        self._profile = profile
        self._random = random.Random(profile.seed)
        self._sent: list[dict[str, Any]] = []

    def item(self) -> tuple[dict[str, Any], str]:
        """One event and what we expect of it: accepted, duplicate or rejected."""
        roll = self._random.random()
        if self._sent and roll < self._profile.duplicate_share:
            return dict(self._random.choice(self._sent)), "duplicate"
        event = self._fresh()
        if roll < self._profile.duplicate_share + self._profile.invalid_share:
            event["citizens_reached"] = -1
            return event, "rejected"
        if len(self._sent) < 50_000:
            self._sent.append(event)
        return event, "accepted"

    def _fresh(self) -> dict[str, Any]:
        team = self._random.choice(self._teams)
        occurred = datetime.now(UTC) - timedelta(seconds=self._random.randint(0, 600))
        skills = self._random.sample(SKILLS, k=self._random.randint(1, 3))
        outcome = self._random.choice(OUTCOMES)
        return {
            "id": str(uuid.uuid4()),
            "team_id": team.team_id,
            "member_id": self._random.choice(team.member_ids),
            "occurred_at": occurred.astimezone().isoformat(),
            "kind": self._random.choice(KINDS),
            "skills": skills,
            "citizens_reached": self._random.randint(1, 6),
            "household_ref": f"hh-{self._random.randint(1, 5_000_000)}",
            "audience": [self._random.choice(AUDIENCES)],
            "outcomes": {outcome: 1},
        }

    def province_of(self, event: dict[str, Any]) -> str:
        return next(t.province for t in self._teams if t.team_id == event["team_id"])


async def run_open_model(
    *,
    client: httpx.AsyncClient,
    keys_by_province: dict[str, str],
    teams_by_province: dict[str, list[TeamRef]],
    profile: LoadProfile,
    on_accepted: Callable[[dict[str, Any], float], None],
) -> LoadResult:
    result = LoadResult()
    provinces = sorted(teams_by_province)
    factories = {p: ActivityFactory(teams=teams_by_province[p], profile=profile) for p in provinces}
    requests_per_s = profile.rate / profile.batch_size
    total = int(requests_per_s * profile.duration_s)
    start = time.monotonic() + 0.2
    tasks: set[asyncio.Task[None]] = set()
    for n in range(total):
        scheduled = start + n / requests_per_s
        delay = scheduled - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.05:
            result.late_starts += 1  # the generator itself could not keep up: reported
        province = provinces[n % len(provinces)]
        items = [factories[province].item() for _ in range(profile.batch_size)]
        task = asyncio.create_task(
            _send(client, keys_by_province[province], items, scheduled, start, result, on_accepted)
        )
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        result.offered += len(items)
    if tasks:
        await asyncio.gather(*tasks)
    return result


async def _send(
    client: httpx.AsyncClient,
    key: str,
    items: list[tuple[dict[str, Any], str]],
    scheduled: float,
    start: float,
    result: LoadResult,
    on_accepted: Callable[[dict[str, Any], float], None],
) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    single = len(items) == 1
    try:
        if single:
            reply = await client.post("/v1/activities", json=items[0][0], headers=headers)
        else:
            reply = await client.post(
                "/v1/activities:batch", json={"items": [i[0] for i in items]}, headers=headers
            )
    except httpx.HTTPError:
        result.http_status[0] += 1
        return
    finished = time.monotonic()
    result.http_status[reply.status_code] += 1
    result.latencies_ms.append((finished - start, (finished - scheduled) * 1000))
    outcomes = _outcomes(reply, single)
    for (event, _expected), (outcome, reason) in zip(items, outcomes, strict=False):
        result.outcomes[outcome] += 1
        if reason:
            result.reasons[reason] += 1
        if outcome == "accepted":
            result.accepted_per_second[int(finished - start)] += 1
            on_accepted(event, time.time())


def _outcomes(reply: httpx.Response, single: bool) -> list[tuple[str, str | None]]:
    if single:
        if reply.status_code == 201:
            return [("accepted", None)]
        if reply.status_code == 200:
            return [("duplicate", None)]
        body = reply.json() if reply.headers.get("content-type", "").endswith("json") else {}
        return [("rejected", str(body.get("reason") or body.get("title") or reply.status_code))]
    if reply.status_code != 200:
        return []
    return [
        (r.get("status") or r.get("result") or "rejected", r.get("reason"))
        for r in reply.json().get("results", reply.json().get("items", []))
    ]
