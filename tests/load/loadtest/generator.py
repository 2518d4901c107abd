"""Open-model load: requests start on a fixed schedule, whatever the server's pace.

Latency is measured from each request's *scheduled* start, so a slow server cannot hide its
queueing (no coordinated omission). Every item carries what we expect of it (accepted,
duplicate, rejected) so the run can reconcile what the service answered with what it stored.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx

from common.contracts.activities import OUTCOMES, SKILLS

AUDIENCES = ("elderly", "small_traders", "families_with_children", "youth", "farmers", "students")
VN = timezone(timedelta(hours=7))
INVALID_KINDS = (
    "count_out_of_range",
    "unknown_skill",
    "unknown_outcome",
    "member_not_in_team",
    "occurred_in_future",
)


@dataclass(frozen=True)
class TeamRef:
    team_id: str
    member_ids: tuple[str, ...]
    province: str


@dataclass(frozen=True)
class Mix:
    """What the partner apps send: kinds, skills, audiences, outcomes and the odd bad event."""

    kinds: tuple[tuple[str, float], ...] = (
        ("household_visit", 0.7),
        ("group_session", 0.2),
        ("support_desk", 0.1),
    )
    max_skills: int = 3
    audience_share: float = 0.6  # events that name an audience
    outcome_share: float = 0.8  # events with at least one outcome
    campaign_share: float = 0.3  # events tagged with the load-test campaign
    duplicate_share: float = 0.05  # re-sends of an already accepted event (same id, same body)
    invalid_share: float = 0.02  # events the service must reject


@dataclass(frozen=True)
class LoadProfile:
    rate: float = 500.0  # events per second offered
    duration_s: float = 60.0
    batch_size: int = 100  # 1 = single-event endpoint
    name: str = "load"


@dataclass
class LoadResult:
    name: str
    rate: float
    started: float = 0.0  # seconds since the run's t0
    ended: float = 0.0
    latencies_ms: list[tuple[float, float]] = field(default_factory=list)  # (t, ms) per request
    outcomes: Counter[str] = field(default_factory=Counter)
    expected: Counter[str] = field(default_factory=Counter)
    mismatches: Counter[str] = field(default_factory=Counter)  # "expected->got"
    reasons: Counter[str] = field(default_factory=Counter)
    http_status: Counter[int] = field(default_factory=Counter)
    accepted_per_second: Counter[int] = field(default_factory=Counter)
    accepted_ids: set[str] = field(default_factory=set)
    offered: int = 0
    requests: int = 0
    late_starts: int = 0
    errors: Counter[str] = field(default_factory=Counter)


class ActivityFactory:
    """Deterministic choices from the seed; ids are random per run (a re-run must not send
    the same ids again, or every event would come back as a duplicate)."""

    def __init__(
        self,
        *,
        teams_by_province: dict[str, list[TeamRef]],
        mix: Mix,
        seed: int,
        campaign_id: str | None,
    ) -> None:
        self._random = random.Random(seed)
        self._mix = mix
        self._campaign = campaign_id
        self.provinces = sorted(teams_by_province)
        self._teams = teams_by_province
        self._weights = [len(teams_by_province[p]) for p in self.provinces]
        self._kinds = [k for k, _ in mix.kinds]
        self._kind_weights = [w for _, w in mix.kinds]
        self._accepted: dict[str, list[dict[str, Any]]] = {p: [] for p in self.provinces}
        self._last_time = datetime.now(UTC)

    def province(self) -> str:
        return self._random.choices(self.provinces, self._weights)[0]

    def remember(self, province: str, event: dict[str, Any]) -> None:
        """An accepted event may be re-sent later as a duplicate."""
        pool = self._accepted[province]
        if len(pool) < 20_000:
            pool.append(event)
        else:
            pool[self._random.randrange(len(pool))] = event

    def item(self, province: str) -> tuple[dict[str, Any], str]:
        """One event and what we expect of it: accepted, duplicate or rejected."""
        roll = self._random.random()
        pool = self._accepted[province]
        if pool and roll < self._mix.duplicate_share:
            return dict(self._random.choice(pool)), "duplicate"
        event = self.fresh(province)
        if roll < self._mix.duplicate_share + self._mix.invalid_share:
            self._spoil(event, province)
            return event, "rejected"
        return event, "accepted"

    @property
    def last_occurred_at(self) -> datetime:
        """Every event made from now on occurs strictly after this moment."""
        return self._last_time

    def _occurred_at(self) -> datetime:
        # Strictly increasing event times: a team's score watermark (`as_of_event_time`) that
        # reaches an event's time then means the event is in the score.
        now = datetime.now(UTC) - timedelta(seconds=1)
        self._last_time = max(now, self._last_time + timedelta(microseconds=1))
        return self._last_time

    def fresh(self, province: str) -> dict[str, Any]:
        r = self._random
        team = r.choice(self._teams[province])
        kind = r.choices(self._kinds, self._kind_weights)[0]
        reached = {"household_visit": (1, 6), "group_session": (5, 40), "support_desk": (1, 3)}
        event: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "team_id": team.team_id,
            "member_id": r.choice(team.member_ids),
            "occurred_at": self._occurred_at().astimezone(VN).isoformat(),
            "kind": kind,
            "skills": r.sample(SKILLS, k=r.randint(1, self._mix.max_skills)),
            "citizens_reached": r.randint(*reached.get(kind, (1, 5))),
        }
        if kind == "household_visit":
            event["household_ref"] = f"hh-{province}-{r.randint(1, 2_000_000)}"
        if r.random() < self._mix.audience_share:
            event["audience"] = r.sample(AUDIENCES, k=r.randint(1, 2))
        if r.random() < self._mix.outcome_share:
            event["outcomes"] = {o: r.randint(1, 2) for o in r.sample(OUTCOMES, k=r.randint(1, 3))}
        if self._campaign and r.random() < self._mix.campaign_share:
            event["campaign_id"] = self._campaign
        return event

    def _spoil(self, event: dict[str, Any], province: str) -> None:
        how = self._random.choice(INVALID_KINDS)
        if how == "count_out_of_range":
            event["citizens_reached"] = -1
        elif how == "unknown_skill":
            event["skills"] = ["time_travel"]
        elif how == "unknown_outcome":
            event["outcomes"] = {"moon_landings": 1}
        elif how == "member_not_in_team":
            others = [t for t in self._teams[province] if t.team_id != event["team_id"]]
            if others:
                event["member_id"] = self._random.choice(others).member_ids[0]
            else:
                event["citizens_reached"] = -1
        else:
            event["occurred_at"] = (datetime.now(UTC) + timedelta(days=1)).isoformat()


async def run_open_model(
    *,
    client: httpx.AsyncClient,
    keys_by_province: dict[str, str],
    factory: ActivityFactory,
    profile: LoadProfile,
    t0: float,
    on_accepted: Callable[[dict[str, Any], float], None],
    progress: Callable[[LoadResult], None] | None = None,
    on_start: Callable[[LoadResult], None] | None = None,
    until: asyncio.Event | None = None,
) -> LoadResult:
    """`profile.duration_s` of load; with `until`, the load goes on past it at the same rate
    until the event is set (a bulk import running beside the load, whose length is unknown)."""
    result = LoadResult(name=profile.name, rate=profile.rate)
    if on_start is not None:
        on_start(result)
    requests_per_s = profile.rate / profile.batch_size
    total = max(1, int(requests_per_s * profile.duration_s))
    start = time.monotonic() + 0.1
    wall_start = time.time() + 0.1
    result.started = round(wall_start - t0, 3)
    tasks: set[asyncio.Task[None]] = set()
    next_progress = start + 5
    n = 0
    while n < total or (until is not None and not until.is_set()):
        scheduled = start + n / requests_per_s
        n += 1
        delay = scheduled - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.05:
            result.late_starts += 1  # the generator itself could not keep up: reported
        province = factory.province()
        items = [factory.item(province) for _ in range(profile.batch_size)]
        task = asyncio.create_task(
            _send(
                client,
                keys_by_province[province],
                province,
                items,
                scheduled,
                wall_start - start,
                t0,
                result,
                factory,
                on_accepted,
            )
        )
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        result.offered += len(items)
        result.requests += 1
        if progress is not None and time.monotonic() >= next_progress:
            next_progress += 5
            progress(result)
    if tasks:
        await asyncio.gather(*tasks)
    # The answers' times are monotonic + this offset: the end from the same clock, so a phase's
    # bounds hold every answer of the phase even if the wall clock is slewed meanwhile.
    result.ended = round(time.monotonic() + (wall_start - start) - t0, 3)
    return result


async def _send(
    client: httpx.AsyncClient,
    key: str,
    province: str,
    items: list[tuple[dict[str, Any], str]],
    scheduled: float,
    mono_to_wall: float,
    t0: float,
    result: LoadResult,
    factory: ActivityFactory,
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
    except httpx.HTTPError as error:
        result.http_status[0] += 1
        result.errors[type(error).__name__] += 1
        for _event, expected in items:
            result.expected[expected] += 1
            result.outcomes["error"] += 1
            result.mismatches[f"{expected}->error"] += 1
        return
    finished = time.monotonic()
    at = finished + mono_to_wall  # wall clock of the answer
    result.http_status[reply.status_code] += 1
    result.latencies_ms.append((round(at - t0, 3), (finished - scheduled) * 1000))
    outcomes = _outcomes(reply, single, len(items))
    for (event, expected), (outcome, reason) in zip(items, outcomes, strict=True):
        result.expected[expected] += 1
        result.outcomes[outcome] += 1
        if outcome != expected:
            result.mismatches[f"{expected}->{outcome}"] += 1
        if reason:
            result.reasons[reason] += 1
        if outcome == "accepted":
            result.accepted_per_second[int(at - t0)] += 1
            result.accepted_ids.add(event["id"])
            factory.remember(province, event)
            on_accepted(event, at)


def _outcomes(reply: httpx.Response, single: bool, n: int) -> list[tuple[str, str | None]]:
    def reason_of(body: Any) -> str:
        if isinstance(body, dict):
            return str(body.get("reason") or body.get("title") or reply.status_code)
        return str(reply.status_code)

    if single:
        if reply.status_code == 201:
            return [("accepted", None)]
        if reply.status_code == 200:
            return [("duplicate", None)]
        body = reply.json() if "json" in reply.headers.get("content-type", "") else {}
        if reply.status_code in (403, 409, 422):
            return [("rejected", reason_of(body))]
        return [(f"http_{reply.status_code}", reason_of(body))]
    if reply.status_code != 200:
        return [(f"http_{reply.status_code}", None)] * n
    answer: Any = reply.json()
    listed: Any = (
        answer.get("items", answer.get("results", [])) if isinstance(answer, dict) else answer
    )
    items: list[dict[str, Any]] = listed if isinstance(listed, list) else []
    found = [(r.get("status") or "rejected", r.get("reason")) for r in items]
    return found + [("missing", None)] * (n - len(found))
