"""Scoring use cases over the repositories: evaluate, publish dirty subjects, full recompute."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

import orjson
from opentelemetry.propagate import inject
from opentelemetry.trace import SpanKind
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession
from uuid_utils.compat import uuid7

from common.db import json_once
from common.runtime import ServiceRuntime
from common.telemetry import context_from_headers, span_link
from scoring import adapters, domain
from scoring.domain import CriteriaSet, Deltas, ScoreResult, SubjectPeriod
from scoring.scorecard import ScoreRequest, score_all, score_pass

log = logging.getLogger(__name__)
SOURCE = "/cdt/scoring"
# a value as it is or already serialized (`common.db.json_once`)
Json = list[dict[str, Any]] | dict[str, float] | orjson.Fragment


@dataclass(frozen=True)
class Evaluation:
    key: SubjectPeriod
    result: ScoreResult
    indicators: dict[str, float]


async def evaluate(
    session: AsyncSession, keys: Sequence[SubjectPeriod], criteria_set: CriteriaSet
) -> list[Evaluation]:
    """Score subject-periods from their aggregated indicators (rollups are never averages),
    all of them at once (`scorecard.score_all`)."""
    indicators, requests = await _score_requests(session, keys)
    return [
        Evaluation(key=key, result=result, indicators=_shown(indicators[key]))
        for key, result in zip(keys, score_all(criteria_set, requests), strict=True)
    ]


async def _score_requests(
    session: AsyncSession, keys: Sequence[SubjectPeriod]
) -> tuple[dict[SubjectPeriod, dict[str, float]], list[ScoreRequest]]:
    """Each key's indicators, and what scoring it needs (targets, the campaign's length)."""
    indicators = await adapters.indicators_for(session, keys)
    targets = await adapters.targets_for(session, keys)
    lengths = await adapters.campaign_lengths(session, (k.period for k in keys))
    requests = [
        ScoreRequest(
            indicators=indicators[key],
            period=key.period,
            targets=targets[key],
            campaign_days=lengths.get(key.period),
        )
        for key in keys
    ]
    return indicators, requests


def _shown(indicators: dict[str, float]) -> dict[str, float]:
    """A score's indicators as published: the stored ones and those derived from them."""
    return {**indicators, **domain.derived_indicators(indicators)}


def components_json(result: ScoreResult) -> list[dict[str, Any]]:
    return [
        {
            "criterion": c.criterion,
            "group": c.group,
            "points": c.points,
            "max_points": c.max_points,
            "value": c.value,
            "target": c.target,
        }
        for c in result.components
    ]


def score_payload(
    *,
    key: SubjectPeriod,
    criteria_set: str,
    score: float,
    max_score: float,
    components: Json,
    indicators: Json,
    rank: tuple[int, int] | None,
    version: int,
    as_of: datetime | None,
    computed_at: datetime,
) -> dict[str, Any]:
    """The `ScoreUpdated` payload as plain data: thousands per second are built here, so no
    model instance (tests check it validates against the contract)."""
    return {
        "subject_type": key.subject_type,
        "subject_id": key.subject_id,
        "period": key.period,
        "criteria_set": criteria_set,
        "score": score,
        "max_score": max_score,
        "rank": rank[0] if rank else None,
        "rank_of": rank[1] if rank else None,
        "components": components,
        "indicators": indicators,
        "version": version,
        "as_of_event_time": as_of,
        "computed_at": computed_at,
    }


MAX_LINKS = 32


async def publish_dirty(
    runtime: ServiceRuntime,
    *,
    limit: int = 2000,
    teams_only: bool = False,
    background: bool = True,
) -> int:
    """Score the subjects marked dirty since the last pass and publish each once.

    However many events touched a subject in between, it yields one update (coalescing): a burst
    on one commune becomes a handful of ScoreUpdated/ScoreLatest pairs, not thousands.
    `teams_only` leaves the units for a later pass (`ScorePublisher` takes them less often);
    `background=False` leaves the background lane for a later pass (`BackgroundCadence`).
    """
    laps = Laps()
    async with runtime.unit_of_work() as uow:
        session = uow.session
        marks = await adapters.take_dirty(
            session, limit=limit, teams_only=teams_only, background=background
        )
        if not marks.taken:
            return 0
        laps.lap("take")
        event_times = marks.event_times
        criteria = await adapters.active_criteria_set(session)
        keys = sorted(event_times)
        indicators, requests = await _score_requests(session, keys)
        scored = score_pass(criteria, requests)
        laps.lap("evaluate")
        now = datetime.now(UTC)
        fresh = dict(zip(keys, scored.scores, strict=True))
        ranks = await adapters.sibling_ranks(session, keys, criteria=criteria.version, fresh=fresh)
        laps.lap("rank")
        # The components as JSON text from the scorecard, the indicators serialized once: the
        # stored score and its history row carry the same text.
        components = dict(zip(keys, map(orjson.Fragment, scored.components), strict=True))
        shown = {key: json_once(_shown(indicators[key])) for key in keys}
        traceparents = _publication_traces(runtime, keys, marks)
        laps.lap("trace")
        await adapters.upsert_scores(
            session,
            [
                {
                    "subject_type": key.subject_type,
                    "subject_id": key.subject_id,
                    "period": key.period,
                    "criteria_set": criteria.version,
                    "score": fresh[key],
                    "max_score": scored.max_score,
                    "components": components[key],
                    "indicators": shown[key],
                    "rank": ranks[key][0] if key in ranks else None,
                    "rank_of": ranks[key][1] if key in ranks else None,
                    "as_of_event_time": event_times[key],
                    "traceparent": traceparents.get(key),
                }
                for key in keys
            ],
            computed_at=now,
        )
        laps.lap("store")
        await uow.commit()
        laps.lap("commit")
    if laps.total() > SLOW_PASS_SECONDS:
        log.warning(
            "slow score publication: %d marks, %d subject-periods in %.1f s (%s)",
            marks.taken,
            len(keys),
            laps.total(),
            laps,
        )
    return marks.taken


SLOW_PASS_SECONDS = 2.0
MAX_REST_SECONDS = 1.0


class Laps:
    """Where a publication pass spent its time, for the slow-pass warning."""

    def __init__(self) -> None:
        self._started = self._last = time.perf_counter()
        self._laps: list[tuple[str, float]] = []

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self._laps.append((name, now - self._last))
        self._last = now

    def total(self) -> float:
        return self._last - self._started

    def __str__(self) -> str:
        return ", ".join(f"{name} {seconds:.2f} s" for name, seconds in self._laps)


def _by_trace(
    keys: Sequence[SubjectPeriod], traces: dict[SubjectPeriod, list[str]]
) -> dict[str | None, list[SubjectPeriod]]:
    """Subject-periods grouped by the latest trace that marked them (one span per group)."""
    groups: dict[str | None, list[SubjectPeriod]] = {}
    for key in keys:
        seen = traces.get(key)
        groups.setdefault(seen[-1] if seen else None, []).append(key)
    return groups


def _publication_traces(
    runtime: ServiceRuntime, keys: Sequence[SubjectPeriod], marks: adapters.DirtyMarks
) -> dict[SubjectPeriod, str]:
    """The trace each score's publication continues, by key: one "publish scores" span per
    group of keys last marked by the same trace, a child of that consumer span linking the
    earlier ones. Its traceparent goes with the score's history row, and the changelog relay
    sends the record from there, so the trace runs on to Kafka."""
    out: dict[SubjectPeriod, str] = {}
    for parent, group in _by_trace(keys, marks.traces).items():
        others = dict.fromkeys(tp for k in group for tp in marks.traces.get(k, ()) if tp != parent)
        links = [
            link
            for tp in list(others)[:MAX_LINKS]
            if (link := span_link({"traceparent": tp})) is not None
        ]
        context = context_from_headers({"traceparent": parent}) if parent else None
        with runtime.tracer.start_as_current_span(
            "publish scores",
            context=context,
            links=links,
            kind=SpanKind.PRODUCER,
            attributes={"cdt.scoring.subject_periods": len(group)},
        ):
            carrier: dict[str, str] = {}
            inject(carrier)
        if traceparent := carrier.get("traceparent"):
            out.update(dict.fromkeys(group, traceparent))
    return out


@dataclass
class UnitCadence:
    """When a publication pass also takes the units' marks: at most every `interval` seconds
    once the units are drained, on every pass while a backlog remains.

    A unit is re-marked by nearly every consumer batch under load (a province by any of its
    10,000 teams): publishing it every pass would send one update per batch for each ancestor.
    Gathered for `interval`, its marks yield one update for all of them. Teams go every pass.
    """

    interval: float = 2.0
    due_at: float = 0.0

    def teams_only(self, now: float) -> bool:
        return now < self.due_at

    def passed(self, *, started: float, teams_only: bool, taken: int, limit: int) -> None:
        """Record a pass: one that took units and fewer marks than its limit drained them."""
        if not teams_only and taken < limit:
            self.due_at = started + self.interval


@dataclass
class BackgroundCadence:
    """When a publication pass also takes the background lane (state indicators of the roster,
    bulk re-scoring): every pass while this process's consumers keep up, at most every
    `interval` seconds while one has a backlog (a registry import, a burst of activities).

    The consumer then gets the CPU the background publications would take, and a waiting
    background mark absorbs the next ones for the same subject-period (`adapters.mark_dirty`):
    an import publishes each state change coalesced, not once per roster batch. Live marks
    go every pass whatever the backlog.
    """

    interval: float = 5.0
    due_at: float = 0.0

    def due(self, now: float, *, backlogged: bool) -> bool:
        if backlogged and now < self.due_at:
            return False
        self.due_at = now + self.interval
        return True


def rest_after_pass(*, interval: float, took: float, full: bool, consumers_behind: bool) -> float:
    """How long the publisher waits before its next pass.

    While a consumer of this process is behind, about as long as the pass took: the publisher
    gets at most half the process and the consumer the rest, and a longer rest coalesces more
    (never long: one pass slowed by the machine must not delay every score behind it). With the
    consumers caught up, a full pass is followed at once (the marks left are a backlog only the
    publisher can drain), and a partial one after `interval` (new marks gather meanwhile).
    """
    if consumers_behind:
        return min(max(interval, took), MAX_REST_SECONDS)
    return 0.0 if full else interval


class Changelog(Protocol):
    """What the publisher sees of the changelog relay of its process."""

    def wake(self) -> None:
        """New score versions were committed."""

    async def caught_up(self) -> None:
        """Returns once its last batch was not full (nothing more waited to be sent)."""


# How long the publisher holds back while the changelog relay is behind, at most: the marks
# gather meanwhile (a key marked again is published once), instead of versions queueing in the
# changelog ahead of the next live score.
MAX_CHANGELOG_WAIT_SECONDS = 5.0


class ScorePublisher:
    """Background task: every `interval` seconds, publish what became dirty (the units at the
    pace of `UnitCadence`), never far ahead of the changelog relay."""

    def __init__(
        self,
        runtime: ServiceRuntime,
        *,
        interval: float = 0.2,
        unit_interval: float = 2.0,
        background_interval: float = 5.0,
        limit: int = 2000,
        changelog: Changelog | None = None,
    ):
        self._runtime = runtime
        self._changelog = changelog
        self._interval = interval
        self._units = UnitCadence(interval=unit_interval)
        self._background = BackgroundCadence(interval=background_interval)
        self._limit = limit
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        while not self._stopping.is_set() and not self._runtime.draining:
            started = time.perf_counter()
            teams_only = self._units.teams_only(started)
            background = self._background.due(started, backlogged=self._consumers_backlogged())
            taken = 0
            try:
                taken = await publish_dirty(
                    self._runtime, limit=self._limit, teams_only=teams_only, background=background
                )
                self._units.passed(
                    started=started, teams_only=teams_only, taken=taken, limit=self._limit
                )
                if taken and self._changelog is not None:
                    self._changelog.wake()
            except Exception:
                log.exception("score publication failed; retrying")
            pause = rest_after_pass(
                interval=self._interval,
                took=time.perf_counter() - started,
                full=taken >= self._limit,
                consumers_behind=self._consumers_backlogged(),
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=pause)
            await self._wait_for_changelog()

    async def _wait_for_changelog(self) -> None:
        if self._changelog is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changelog.caught_up(), timeout=MAX_CHANGELOG_WAIT_SECONDS)

    def _consumers_backlogged(self) -> bool:
        """More than a full batch waits for one of this process's consumers."""
        threshold = self._runtime.settings.consumer_batch_size
        return any(consumer.backlog() > threshold for consumer in self._runtime.consumers)


# --------------------------------------------------------------------------- full recompute


@dataclass(frozen=True)
class RecomputeResult:
    facts: int
    teams: int
    seconds: float
    dirty: int


Progress = Callable[[int, int], None]


async def recompute(
    session: AsyncSession, *, chunk: int = 50_000, progress: Progress | None = None
) -> RecomputeResult:
    """Rebuild every indicator from the stored facts and roster, in the caller's transaction.

    Facts go through the very expansion and upserts the consumer uses (`Deltas.add_fact`,
    `apply_deltas`), so the result is what the incremental path produces. The exclusive lock
    holds consumer batches back until this transaction commits.
    """
    started = time.perf_counter()
    await adapters.lock_for_recompute(session)
    await adapters.truncate_derived(session)
    total = await adapters.count_live_facts(session)
    done = 0
    # By team: a chunk then holds whole teams, so their rows aggregate before any SQL
    # (a team-month row is written once, not once per activity).
    async for facts in adapters.live_fact_batches(session, chunk=chunk):
        deltas = Deltas()
        placed: dict[tuple[Any, ...], dict[str, str | None]] = {}
        deltas.add_facts(facts, +1)
        for team_id, path in {(f.team_id, f.path) for f in facts}:
            for subject in domain.subject_rows(team_id, path):
                placed[(subject["subject_type"], subject["subject_id"])] = subject
        await adapters.upsert_subjects(session, placed.values())
        await adapters.apply_deltas(session, deltas)
        done += len(facts)
        if progress is not None:
            progress(done, total)
    teams = await _recompute_roster(session)
    dirty = await adapters.mark_all_dirty(session)
    return RecomputeResult(
        facts=done, teams=teams, seconds=time.perf_counter() - started, dirty=dirty
    )


# --------------------------------------------------------------------------- recompute jobs

JOB_HEARTBEAT_SECONDS = 1.0


@dataclass
class JobProgress:
    """Facts done and total, as `recompute` reports them (read by the job's heartbeat)."""

    done: int = 0
    total: int | None = None

    def record(self, done: int, total: int) -> None:
        self.done, self.total = done, total


async def start_recompute(runtime: ServiceRuntime) -> tuple[RowMapping, bool]:
    """The job answering `POST /v1/recompute`: a new one, running in the background, or the
    one already queued or running (False: not created by this call)."""
    job_id = uuid7()
    async with runtime.unit_of_work() as uow:
        job = await adapters.create_recompute_job(uow.session, job_id)
        await uow.commit()
    created = job["id"] == job_id
    if created:
        runtime.start_job(f"recompute {job_id}", run_recompute_job(runtime, job_id))
    return job, created


async def run_recompute_job(runtime: ServiceRuntime, job_id: UUID) -> None:
    """Run the recompute in one transaction while a heartbeat records its progress in others;
    the outcome (counts, or the error's type) is stored with the job."""
    progress = JobProgress()
    await _update_job(runtime, job_id, state="running", started_at=adapters.db_now())

    async def heartbeat() -> None:
        while True:
            await asyncio.sleep(JOB_HEARTBEAT_SECONDS)
            try:
                await _update_job(
                    runtime, job_id, facts_done=progress.done, facts_total=progress.total
                )
            except Exception as exc:  # a missed beat is retried; the job itself goes on
                log.warning("recompute job %s: progress not recorded (%s)", job_id, exc)

    beating = asyncio.create_task(heartbeat())
    try:
        async with runtime.unit_of_work() as uow:
            result = await recompute(uow.session, progress=progress.record)
            await uow.commit()
    except asyncio.CancelledError:
        await asyncio.shield(
            _update_job(
                runtime,
                job_id,
                state="failed",
                finished_at=adapters.db_now(),
                error="interrupted: the service stopped",
            )
        )
        raise
    except Exception as exc:
        log.exception("recompute job %s failed", job_id)
        await _update_job(
            runtime, job_id, state="failed", finished_at=adapters.db_now(), error=type(exc).__name__
        )
    else:
        await _update_job(
            runtime,
            job_id,
            state="succeeded",
            finished_at=adapters.db_now(),
            facts_done=result.facts,
            facts_total=result.facts,
            result={
                "facts": result.facts,
                "teams": result.teams,
                "subjects_to_rescore": result.dirty,
                "seconds": round(result.seconds, 3),
            },
        )
    finally:
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating


async def _update_job(runtime: ServiceRuntime, job_id: UUID, **values: Any) -> None:
    async with runtime.unit_of_work() as uow:
        await adapters.update_recompute_job(uow.session, job_id, **values)
        await uow.commit()


def job_view(job: RowMapping, *, now: datetime) -> dict[str, Any]:
    """A job as `GET /v1/recompute/{id}` shows it: state, facts done of total, rate and ETA."""
    done, total = int(job["facts_done"]), job["facts_total"]
    started, finished = job["started_at"], job["finished_at"]
    elapsed = ((finished or now) - started).total_seconds() if started else 0.0
    rate = done / elapsed if elapsed > 0 else None
    remaining = (total - done) if total is not None else None
    eta = (
        round(remaining / rate, 1)
        if job["state"] == "running" and rate and remaining is not None
        else None
    )
    return {
        "id": str(job["id"]),
        "state": job["state"],
        "facts_done": done,
        "facts_total": total,
        "facts_per_second": round(rate, 1) if rate is not None else None,
        "eta_seconds": eta,
        "created_at": job["created_at"],
        "started_at": started,
        "finished_at": finished,
        "result": job["result"],
        "error": job["error"],
    }


async def rebuild_if_missing(session: AsyncSession) -> RecomputeResult | None:
    """Recompute when facts are stored but no indicator is (after a migration emptied them)."""
    await adapters.lock_for_recompute(session)
    facts = await adapters.any_fact_stored(session)
    derived = await adapters.any_indicator_stored(session)
    if not facts or derived:
        return None
    log.warning("indicators missing for stored facts: rebuilding them from the facts")
    return await recompute(session)


async def _recompute_roster(session: AsyncSession) -> int:
    """State indicators from the stored team and member replica (the same Roster rules)."""
    rows = await adapters.team_state_rows(session)
    roster = domain.Roster()
    deltas = Deltas()
    for row in rows:
        team_id = row["team_id"]
        roster.counts[team_id] = (row["members"], row["trained_members"])
        if row["members"] or row["trained_members"]:
            deltas.state[("team", str(team_id), "members")] += row["members"]
            deltas.state[("team", str(team_id), "trained_members")] += row["trained_members"]
        if row["version"] >= 0:
            roster.apply_team(
                domain.TeamState(
                    team_id=team_id,
                    path=adapters.path_of(row) if row["province"] else None,
                    active=row["active"],
                    version=row["version"],
                ),
                deltas,
            )
    await adapters.apply_deltas(session, deltas)
    return len(rows)
