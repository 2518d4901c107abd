"""`python -m tests.load.loadtest`: the national rollup under an open-model load, in one command.

1. The stack: a running `make run` (ports 8001-8004 ready, `.data/admin-token`), the services
   at `--base-url`, or (when nothing answers) a stack started here like `make run` does.
2. The national fixture through the public bulk APIs (reused across runs), partner keys (one per
   province), targets and one campaign through the public APIs.
3. Calibration: Kafka's ProducerPerformance and a PostgreSQL COPY on this machine.
4. A ramp that finds the sustained rate (the highest step whose events are scored within the
   SLO without a growing backlog), then one phase per `--rates` entry (e.g. 50 % and 80 % of it),
   or one long `--soak` phase at `--rate` or the sustained rate.
5. Per phase: events/s accepted, scored (national `activities` indicator) and alerted (records
   on `notifications.alert-raised.v1`); acceptance and end-to-end latency percentiles (POST to
   the team's `score-latest` record); Kafka records per accepted event; lag per consumer group
   and outbox backlog; CPU and memory per process; the ratio of the phase's rates to the Kafka
   and COPY calibration of the same run; and an exact reconciliation: accepted = stored in
   activities (export by id) = facts in scoring (national `activities` indicator), rejected and
   duplicates as sent. A py-spy profile of the services during the last (busiest) phase names
   the bottleneck; the report keeps the busiest service's profile apart.
6. `--import-during-load` (issue 22, item 3: an import must not bury live scores): a slice of new
   teams and members imported through the teams bulk APIs while the load goes on at the last
   phase's rate, then a phase right after it (no drain between; both reconciled together). The
   report gives the import's rows, seconds and rows/s, the roster records it published, when
   the replicas had read them, and live e2e p99 before / during / after the import.
7. `--soak MINUTES`: per-window (`--soak-window`, 60 s) consumer lag, memory per process and e2e
   percentiles, and a verdict whether each stayed flat (bounds in `soak.py` and `--help`).
8. `reports/loadtest-<timestamp>.json` and `.png`; a summary on stdout. Exit 1 if a phase does
   not reconcile or the import fails (a soak that is not flat is a finding, not a failure).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import json
import os
import platform
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from tests.load.loadtest import calibrate, importer, profile, report, soak
from tests.load.loadtest import stack as stacks
from tests.load.loadtest.fixture import SCALES, Fixture, ensure_fixture
from tests.load.loadtest.generator import (
    VN,
    ActivityFactory,
    LoadProfile,
    LoadResult,
    Mix,
    run_open_model,
)
from tests.load.loadtest.sampler import ProcessSampler
from tests.load.loadtest.watch import BrokerLag, EndToEnd, Pipeline, national_activities

ROOT = stacks.ROOT
PYTHON_PROCESSES = ("teams", "activities", "scoring", "notifications")


def say(line: str) -> None:
    print(f"[loadtest {time.strftime('%H:%M:%S')}] {line}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tests.load.loadtest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--scale", choices=sorted(SCALES), default="national")
    p.add_argument("--seed", type=int, default=42, help="fixture and load mix (default 42)")
    p.add_argument("--rate", type=float, help="one phase at this many events/s (no ramp)")
    p.add_argument(
        "--rates",
        default="50%,80%",
        help="phases after the ramp: events/s or %% of the sustained rate (default 50%%,80%%)",
    )
    p.add_argument("--duration", type=float, default=60, help="seconds per phase (default 60)")
    p.add_argument("--batch-size", type=int, default=100, help="events per request (1 = single)")
    p.add_argument("--duplicates", type=float, default=0.05, help="share of re-sent events")
    p.add_argument("--invalid", type=float, default=0.02, help="share of invalid events")
    p.add_argument("--campaign-share", type=float, default=0.3)
    p.add_argument("--no-ramp", action="store_true", help="skip the sustained-rate search")
    p.add_argument("--ramp-start", type=float, default=50)
    p.add_argument("--ramp-factor", type=float, default=1.5)
    p.add_argument("--ramp-step", type=float, default=15, help="seconds per ramp step")
    p.add_argument("--ramp-max", type=float, default=50_000)
    p.add_argument("--slo-e2e-ms", type=float, default=5000, help="ramp: e2e p95 bound")
    p.add_argument("--slo-accept-ms", type=float, default=1000, help="ramp: acceptance p99 bound")
    p.add_argument("--calibration-records", type=int, default=200_000, help="0 = skip")
    p.add_argument("--profile-seconds", type=float, default=20, help="py-spy; 0 = off")
    p.add_argument("--drain-timeout", type=float, default=240)
    p.add_argument(
        "--warmup-timeout",
        type=float,
        default=900,
        help="how long to wait for an idle pipeline before measuring (replicas, re-scoring)",
    )
    p.add_argument("--base-url", default="http://127.0.0.1", help="host of the four services")
    p.add_argument(
        "--ports",
        default="8001,8002,8003,8004",
        help="teams,activities,scoring,notifications ports, or 'auto' (free ports, own stack)",
    )
    p.add_argument("--token", help="operator token (default CDT_ADMIN_TOKEN or .data/admin-token)")
    p.add_argument("--kafka", help="bootstrap servers (default from .data or the started stack)")
    p.add_argument("--database-url", help="for the COPY calibration (default from .data)")
    p.add_argument("--start", action="store_true", help="always start an own stack")
    p.add_argument("--data-dir", type=Path, default=ROOT / ".data")
    p.add_argument("--reports-dir", type=Path, default=ROOT / "reports")
    p.add_argument("--trace-ratio", type=float, default=0.01, help="own stack's trace sampling")
    p.add_argument(
        "--import-during-load",
        action="store_true",
        help="after the measured phases, a phase at the last phase's rate during which a slice "
        "of new teams and members is imported through the teams bulk APIs (lasting at least "
        "--duration, longer if the import does), then a phase 'after import' at the same rate "
        "right after it, no drain between: the report compares their e2e with the phase before",
    )
    p.add_argument(
        "--import-teams",
        type=int,
        help="teams in that slice, 4-9 members each (default max(1,000, 10%% of the fixture))",
    )
    p.add_argument("--soak", type=float, metavar="MINUTES", help=soak.HELP)
    p.add_argument(
        "--soak-window", type=float, default=60, help="seconds per soak window (default 60)"
    )
    return p.parse_args(argv)


@dataclass
class Run:
    args: argparse.Namespace
    stack: stacks.Stack
    t0: float = field(default_factory=time.time)
    e2e: EndToEnd | None = None
    pipeline: Pipeline | None = None
    sampler: ProcessSampler | None = None
    phases: list[dict[str, Any]] = field(default_factory=list)
    accepted_per_second: Counter[int] = field(default_factory=Counter)
    acceptance: list[tuple[float, float]] = field(default_factory=list)
    current: LoadResult | None = None
    calibration: dict[str, Any] = field(default_factory=dict)

    @property
    def operator(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.stack.token}"}

    def now(self) -> float:
        return time.time() - self.t0


# ----------------------------------------------------------------------------- set-up


async def ensure_partners(
    run: Run, client: httpx.AsyncClient, provinces: list[str]
) -> dict[str, str]:
    """One partner key per province; keys are shown once, so they are kept (0600) for reuse."""
    state = run.args.data_dir / "loadtest"
    state.mkdir(parents=True, exist_ok=True)
    path = state / "partners.json"
    activities = run.stack.urls["activities"]
    saved: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    keys: dict[str, str] = dict(saved.get(activities, {}))
    for province in provinces:
        key = keys.get(province)
        if key is not None:
            probe = await client.get(
                f"{activities}/v1/activities",
                params={"limit": 1},
                headers={"Authorization": f"Bearer {key}"},
            )
            if probe.status_code == 200:
                continue
        reply = await client.post(
            f"{activities}/v1/partners",
            json={
                "name": f"Load test partner {province}",
                "provinces": [province],
                "rate_limit_per_second": 100_000,
            },
            headers=run.operator,
        )
        reply.raise_for_status()
        keys[province] = reply.json()["api_key"]
    saved[activities] = keys
    path.write_text(json.dumps(saved, indent=2))
    path.chmod(0o600)
    return {p: keys[p] for p in provinces}


async def ensure_targets_and_campaign(run: Run, client: httpx.AsyncClient, fixture: Fixture) -> str:
    scoring = run.stack.urls["scoring"]
    year = str(datetime.now(VN).year)
    teams = fixture.teams_by_province()
    for province, refs in teams.items():
        reply = await client.put(
            f"{scoring}/v1/targets",
            json={
                "subject_type": "province",
                "subject_id": province,
                "period": year,
                "indicator": "app_installs",
                "value": len(refs) * 5 * 12,
            },
            headers=run.operator,
        )
        reply.raise_for_status()
    today = datetime.now(VN).date()
    first = today.replace(day=1)
    end = (first + timedelta(days=62)).replace(day=1) - timedelta(days=1)
    campaign = f"lt-{fixture.plan.scale.name}-{first:%Y%m}"
    reply = await client.post(
        f"{scoring}/v1/campaigns",
        json={
            "id": campaign,
            "name": f"Chiến dịch thử tải {first:%m/%Y}",
            "start_date": first.isoformat(),
            "end_date": end.isoformat(),
            "unit_codes": sorted(teams),
        },
        headers=run.operator,
    )
    if reply.status_code not in (201, 409):
        reply.raise_for_status()
    return campaign


async def calibration(run: Run) -> dict[str, Any]:
    records = run.args.calibration_records
    if records <= 0:
        return {"skipped": True}
    say(f"calibration: Kafka ProducerPerformance ({records:,} records of 600 B, acks=all)")
    result: dict[str, Any] = {"records": records}
    try:
        rate, mb = await calibrate.kafka_producer_perf_async(run.stack.bootstrap, records=records)
        result.update(kafka_records_per_s=round(rate), kafka_mb_per_s=round(mb, 1))
        say(f"calibration: Kafka alone {rate:,.0f} records/s ({mb:.1f} MB/s)")
    except Exception as error:
        result["kafka_error"] = str(error)[-300:]
        say(f"calibration: Kafka failed: {error}")
    if run.stack.database_url:
        try:
            copy = await calibrate.postgres_copy(run.stack.database_url, rows=records)
            result["postgres_copy_rows_per_s"] = round(copy)
            say(f"calibration: PostgreSQL COPY alone {copy:,.0f} rows/s")
        except Exception as error:
            result["postgres_error"] = str(error)[-300:]
    else:
        result["postgres_error"] = "database URL unknown (pass --database-url)"
    return result


# ----------------------------------------------------------------------------- measuring


CORE_GROUPS = ("activities/", "scoring/", "teams/")
CORE_OUTBOXES = ("teams", "activities", "scoring", "scoring-changelog")


async def idle(
    run: Run,
    client: httpx.AsyncClient,
    expected_scored: int | None,
    *,
    timeout: float | None = None,
    grace: float = 15,
) -> dict[str, Any]:
    """Until the rollup path has caught up (the activities and scoring consumer groups, the
    teams / activities / scoring outboxes and, when given, `expected_scored` activities in the
    national indicator), then up to `grace` more seconds for everything else (notifications)
    to catch up too. Returns how long it took and what was left."""
    assert run.pipeline is not None
    timeout = run.args.drain_timeout if timeout is None else timeout
    started = time.monotonic()
    core_at: float | None = None
    last_say = started
    published, changed_at = None, time.monotonic()
    while True:
        row = await run.pipeline.sample(client)
        # Scoring still publishing (e.g. re-scoring after a roster import) is not idle either;
        # its relay publishes in bursts, so quiet means no new score record for 5 s.
        if row.get("scores_published") != published:
            published, changed_at = row.get("scores_published"), time.monotonic()
        quiet = time.monotonic() - changed_at >= 5
        lag = sum(row["lag"].values())
        backlog = sum(row["backlog"].values())
        core_lag = sum(v for k, v in row["lag"].items() if k.startswith(CORE_GROUPS))
        core_backlog = sum(v for k, v in row["backlog"].items() if k in CORE_OUTBOXES)
        scored = row.get("scored")
        # Before measuring: no re-scoring backlog either; after a phase: every accepted event
        # is a fact in scoring.
        settled = quiet if expected_scored is None else scored == expected_scored
        core = core_lag == 0 and core_backlog == 0 and settled
        elapsed = time.monotonic() - started
        if core and core_at is None:
            core_at = elapsed
        if core and ((lag == 0 and backlog == 0) or elapsed - (core_at or 0) > grace):
            return {
                "seconds": round(elapsed, 1),
                "rollup_caught_up_after_s": round(core_at or elapsed, 1),
                "complete": True,
                "left_behind": {k: v for k, v in row["lag"].items() if v},
            }
        if elapsed > timeout:
            return {
                "seconds": round(elapsed, 1),
                "complete": False,
                "lag": row["lag"],
                "backlog": row["backlog"],
                "scored": scored,
            }
        if time.monotonic() - last_say > 10:
            last_say = time.monotonic()
            behind = ", ".join(f"{k} {v:,}" for k, v in sorted(row["lag"].items()) if v)
            say(
                f"draining: lag {behind or 0}; outbox {backlog:,.0f}; scored {scored}"
                + (f" of {expected_scored}" if expected_scored is not None else "")
                + f"; e2e pending {run.e2e.unmatched() if run.e2e else 0:,}"
            )
        await asyncio.sleep(1)


def _window(points: list[tuple[float, float]], since: float, until: float) -> list[float]:
    return [v for t, v in points if since <= t <= until]


def seen_between(latencies: list[tuple[float, float]], since: float, until: float) -> list[float]:
    """Latencies of the score records seen between two times. The list grows in the order the
    records were seen, so the scan runs from its end and stops at the first older one: a soak
    holds millions of them and this runs every 5 s."""
    found = []
    for t, ms in reversed(latencies):
        seen = t + ms / 1000
        if seen < since - 1:
            break
        if since <= seen <= until:
            found.append(ms)
    return found


async def progress_loop(run: Run, stop: asyncio.Event) -> None:
    last_t = run.now()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=5)
        now = run.now()
        result = run.current
        if result is None or run.e2e is None:
            last_t = now
            continue
        accepted = sum(v for s, v in result.accepted_per_second.items() if last_t <= s < now)
        acc = report.percentiles(_window(result.latencies_ms, last_t, now))
        e2e = report.percentiles(seen_between(run.e2e.latencies_ms, last_t, now))
        row = run.pipeline.last() if run.pipeline else {"lag": {}, "backlog": {}}
        scoring_lag = sum(v for k, v in row["lag"].items() if k.startswith("scoring/"))
        backlog = ", ".join(f"{k} {v:,.0f}" for k, v in sorted(row["backlog"].items()) if v)
        cpu = run.sampler.latest() if run.sampler else {}
        busiest = ", ".join(
            f"{k} {v:.0f}%" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])[:4]
        )
        say(
            f"{result.name}: t={now:5.0f}s offered {result.rate:,.0f}/s accepted "
            f"{accepted / max(now - last_t, 1e-9):,.0f}/s | accept p99 {acc.get('p99', '-')} ms | "
            f"e2e p50 {e2e.get('p50', '-')} p99 {e2e.get('p99', '-')} ms, pending "
            f"{run.e2e.unmatched():,} | scoring lag {scoring_lag:,}"
            f"{' | outbox ' + backlog if backlog else ''} | cpu {busiest}"
        )
        last_t = now


async def export_ids(
    run: Run, client: httpx.AsyncClient, since: datetime, until: datetime
) -> set[str]:
    """Ids the activities service stored with `since <= occurred_at < until` (public export)."""
    ids: set[str] = set()
    async with client.stream(
        "GET",
        f"{run.stack.urls['activities']}/v1/activities:export",
        params={"since": since.isoformat(), "until": until.isoformat()},
        headers=run.operator,
        timeout=httpx.Timeout(600),
    ) as reply:
        reply.raise_for_status()
        # Line by line: a soak's export is millions of rows, never held as one text.
        column: int | None = None
        async for line in reply.aiter_lines():
            if not line:
                continue
            [row] = csv.reader(io.StringIO(line))
            if column is None:
                column = row.index("id")
            else:
                ids.add(row[column])
    return ids


@dataclass
class PhaseContext:
    factory: ActivityFactory
    keys: dict[str, str]
    client: httpx.AsyncClient
    period: str
    lag: BrokerLag


@dataclass
class Mark:
    """Counters when a phase starts: its deltas (facts in scoring, Kafka records) start here."""

    scored: int
    topics: dict[str, int]
    first_time: datetime  # the phase's events occur after this


@dataclass
class Offered:
    """One phase's load as sent and answered, before the pipeline is drained and reconciled."""

    result: LoadResult
    summary: dict[str, Any]
    mark: Mark
    last_time: datetime


async def take_mark(run: Run, ctx: PhaseContext) -> Mark:
    return Mark(
        scored=await national_activities(ctx.client, run.stack.urls["scoring"], ctx.period),
        topics=await ctx.lag.end_offsets(_all_topics()),
        # Exact, not a margin before now: the previous phase's last events occurred a moment
        # ago, and a margin would count them as this phase's strays.
        first_time=ctx.factory.last_occurred_at + timedelta(microseconds=1),
    )


async def run_phase(
    run: Run, ctx: PhaseContext, *, name: str, rate: float, duration: float, drain: bool
) -> tuple[LoadResult, dict[str, Any]]:
    """One constant-rate phase; with `drain`, waits for the pipeline and reconciles."""
    offered = await offer(run, ctx, name=name, rate=rate, duration=duration)
    if drain:
        await reconcile(run, ctx, [offered])
    return offered.result, offered.summary


async def offer(
    run: Run,
    ctx: PhaseContext,
    *,
    name: str,
    rate: float,
    duration: float,
    until: asyncio.Event | None = None,
) -> Offered:
    """The open-model load of one phase and what the activities service answered."""
    assert run.e2e is not None
    mark = await take_mark(run, ctx)
    say(f"{name}: {rate:,.0f} events/s for {duration:.0f} s (batches of {run.args.batch_size})")
    result = await run_open_model(
        client=ctx.client,
        keys_by_province=ctx.keys,
        factory=ctx.factory,
        profile=LoadProfile(
            rate=rate, duration_s=duration, batch_size=run.args.batch_size, name=name
        ),
        t0=run.t0,
        on_accepted=run.e2e.accepted,
        progress=lambda r: setattr(run, "current", r),
        on_start=lambda r: setattr(run, "current", r),
        until=until,
    )
    run.current = None
    last_time = datetime.now(UTC)
    run.accepted_per_second.update(result.accepted_per_second)
    run.acceptance += result.latencies_ms
    summary: dict[str, Any] = {
        "name": name,
        "offered_rate": round(rate, 1),
        "duration_s": round(result.ended - result.started, 1) if until else duration,
        "started": result.started,
        "ended": result.ended,
        "requests": result.requests,
        "offered_events": result.offered,
        "late_starts": result.late_starts,
        "http_status": {str(k): v for k, v in sorted(result.http_status.items())},
        "errors": dict(result.errors),
        "outcomes": dict(result.outcomes),
        "expected": dict(result.expected),
        "reasons": dict(result.reasons.most_common()),
        "accepted_events_per_s": round(
            result.outcomes["accepted"] / max(result.ended - result.started, 1e-9), 1
        ),
        "acceptance_ms": report.percentiles([ms for _, ms in result.latencies_ms]),
    }
    return Offered(result, summary, mark, last_time)


async def reconcile(run: Run, ctx: PhaseContext, group: list[Offered]) -> None:
    """Drains once after the last phase of `group`, then fills each phase's reconciliation and
    figures in. Phases run back to back without a drain between them (an import and the phase
    after it) share the pipeline's backlog, so the facts in scoring are counted for the group:
    each phase's accepted = stored (by id), and the group's accepted = facts added in scoring."""
    assert run.e2e is not None
    e2e_tracker = run.e2e
    start = group[0].mark
    accepted_ids = set().union(*(o.result.accepted_ids for o in group))
    drained = await idle(run, ctx.client, start.scored + len(accepted_ids))
    # Every accepted event's team score should reach the subscriber: wait for the slow tail too
    # (score publication can lag behind the facts), so the percentiles are not censored.
    deadline = time.monotonic() + run.args.drain_timeout
    last_say = time.monotonic()

    def pending() -> int:
        return sum(_pending_for(e2e_tracker, o.result) for o in group)

    while time.monotonic() < deadline and (waiting := pending()):
        if time.monotonic() - last_say > 10:
            last_say = time.monotonic()
            say(f"{group[-1].summary['name']}: {waiting:,} accepted events still without a score")
        await asyncio.sleep(0.5)
    scored_after = await national_activities(ctx.client, run.stack.urls["scoring"], ctx.period)
    topics_after = await ctx.lag.end_offsets(_all_topics())
    stored = await export_ids(
        run, ctx.client, start.first_time, group[-1].last_time + timedelta(seconds=1)
    )
    facts = scored_after - start.scored
    together = [o.summary["name"] for o in group] if len(group) > 1 else None
    group_exact = facts == sum(o.result.outcomes["accepted"] for o in group) and not (
        stored - accepted_ids
    )
    for n, offered in enumerate(group):
        topics_end = group[n + 1].mark.topics if n + 1 < len(group) else topics_after
        offered.summary["drain"] = drained
        offered.summary["reconciliation"] = _reconciliation(
            run, offered.result, stored, stored - accepted_ids, facts, together, group_exact
        )
        records = {t: topics_end.get(t, 0) - offered.mark.topics.get(t, 0) for t in topics_end}
        _phase_figures(run, offered, records)


def _reconciliation(
    run: Run,
    result: LoadResult,
    stored: set[str],
    stray: set[str],
    facts: int,
    together: list[str] | None,
    group_exact: bool,
) -> dict[str, Any]:
    assert run.e2e is not None
    accepted = result.outcomes["accepted"]
    rec: dict[str, Any] = {
        "accepted_answers": accepted,
        "accepted_unique_ids": len(result.accepted_ids),
        "stored_in_activities": len(stored & result.accepted_ids),
        "stored_but_not_accepted": len(stray),
        "facts_in_scoring": facts,
        "rejected": result.outcomes["rejected"],
        "rejected_expected": result.expected["rejected"],
        "duplicates": result.outcomes["duplicate"],
        "duplicates_expected": result.expected["duplicate"],
        "mismatched_outcomes": dict(result.mismatches),
        "e2e_matched": sum(1 for t, _ in run.e2e.latencies_ms if _within(t, result)),
        "e2e_unmatched": _pending_for(run.e2e, result),
    }
    if together is not None:
        rec["facts_counted_for"] = together  # the facts of these phases together
    rec["not_exact"] = _not_exact(rec, group_exact=group_exact)
    rec["exact"] = not rec["not_exact"]
    return rec


def _not_exact(rec: dict[str, Any], *, group_exact: bool) -> list[str]:
    """What keeps a phase's reconciliation from being exact, in words (empty when exact)."""
    problems = []
    if not rec["accepted_answers"] == rec["accepted_unique_ids"] == rec["stored_in_activities"]:
        problems.append(
            f"accepted {rec['accepted_answers']} / unique ids {rec['accepted_unique_ids']} / "
            f"stored {rec['stored_in_activities']}"
        )
    if not group_exact:
        problems.append(
            f"facts in scoring {rec['facts_in_scoring']}, stored but not accepted "
            f"{rec['stored_but_not_accepted']}"
        )
    if rec["mismatched_outcomes"]:
        problems.append(f"outcomes expected->got {rec['mismatched_outcomes']}")
    for outcome in ("rejected", "duplicates"):
        if rec[outcome] != rec[f"{outcome}_expected"]:
            problems.append(f"{outcome} {rec[outcome]}, expected {rec[f'{outcome}_expected']}")
    return problems


def _phase_figures(run: Run, offered: Offered, records: dict[str, int]) -> None:
    """Throughput scored and alerted, e2e, Kafka records, lag, outbox, CPU and memory, and the
    ratio to the calibration, for one phase (its load window; queues up to 5 s after it)."""
    assert run.e2e is not None
    result, summary = offered.result, offered.summary
    accepted = result.outcomes["accepted"]
    span = max(result.ended - result.started, 1e-9)
    e2e = [ms for t, ms in run.e2e.latencies_ms if _within(t, result)]
    summary["end_to_end_ms"] = report.percentiles(e2e)
    series = _series(run, result.started, result.ended)
    scored = _growth(run, "scored", result.started, result.ended)
    alerts = _growth(run, "alerts_published", result.started, result.ended)
    summary["scored_events_per_s"] = round(scored / span, 1) if scored is not None else None
    summary["alerts_per_s"] = round(alerts / span, 1) if alerts is not None else None
    summary["alerts_published"] = alerts
    summary["kafka_records_per_accepted_event"] = round(sum(records.values()) / max(accepted, 1), 2)
    summary["kafka_records"] = {k: v for k, v in sorted(records.items()) if v}
    summary["lag_max"] = max((sum(r["lag"].values()) for r in series), default=0)
    window = _series(run, result.started, result.ended + 5)
    summary["lag_max_by_group"] = _max_by(window, "lag")
    summary["outbox_max_by_service"] = _max_by(window, "backlog")
    summary["scoring_lag_max"] = max(
        (sum(v for k, v in r["lag"].items() if k.startswith("scoring/")) for r in series),
        default=0,
    )
    summary["outbox_backlog_max"] = max((sum(r["backlog"].values()) for r in series), default=0)
    summary["calibration_ratios"] = calibration_ratios(summary, run.calibration)
    if run.sampler is not None:
        summary["processes"] = run.sampler.summary(result.started, result.ended)
        summary["machine_cpu_pct"] = run.sampler.machine_cpu_pct(result.started, result.ended)


def _max_by(rows: list[dict[str, Any]], key: str) -> dict[str, float]:
    """The peak of each group (or service) that was ever non-zero in `rows`."""
    names = sorted({k for r in rows for k in r[key]})
    return {
        k: max(r[key].get(k, 0) for r in rows) for k in names if any(r[key].get(k) for r in rows)
    }


def _growth(run: Run, key: str, since: float, until: float) -> int | None:
    """How much a count the pipeline samples (scored facts, alert records) grew between the
    samples nearest to two times."""
    assert run.pipeline is not None
    rows = [r for r in run.pipeline.series if r.get(key) is not None]
    if not rows:
        return None
    first = min(rows, key=lambda r: abs(r["t"] - since))
    last = min(rows, key=lambda r: abs(r["t"] - until))
    return max(int(last[key]) - int(first[key]), 0)


def calibration_ratios(summary: dict[str, Any], cal: dict[str, Any]) -> dict[str, float]:
    """The phase's rates as shares of what Kafka alone writes and PostgreSQL alone COPYs here,
    measured in the same run: `accepted_over_kafka` (events/s accepted ÷ Kafka records/s),
    `kafka_writes_over_kafka` (records/s the stack wrote ÷ Kafka records/s: the broker's share
    in use), `accepted_over_copy` and `scored_over_copy` (÷ COPY rows/s)."""
    accepted = summary["accepted_events_per_s"]
    rates = {
        "accepted": accepted,
        "scored": summary.get("scored_events_per_s"),
        "kafka_writes": accepted * summary.get("kafka_records_per_accepted_event", 0),
    }
    ratios: dict[str, float] = {}
    for cal_key, short, what in (
        ("kafka_records_per_s", "kafka", ("accepted", "kafka_writes")),
        ("postgres_copy_rows_per_s", "copy", ("accepted", "scored")),
    ):
        if not cal.get(cal_key):
            continue
        for name in what:
            if (value := rates.get(name)) is not None:
                ratios[f"{name}_over_{short}"] = round(value / cal[cal_key], 5)
    return ratios


def _within(t: float, result: LoadResult) -> bool:
    """An answer at `t` (s since t0) belongs to the phase: its bounds and the answers' times
    come from the same clock, so only the rounding to 1 ms needs a margin (phases run back to
    back must not share an event)."""
    return result.started - 0.001 <= t <= result.ended + 0.001


def _pending_for(e2e: EndToEnd, result: LoadResult) -> int:
    return sum(
        1 for waiting in e2e.pending.values() for _, at in waiting if _within(at - e2e.t0, result)
    )


def _series(run: Run, since: float, until: float) -> list[dict[str, Any]]:
    assert run.pipeline is not None
    return [r for r in run.pipeline.series if since <= r["t"] <= until]


def _all_topics() -> list[str]:
    from common.topics import all_topics

    return [t.name for t in all_topics()]


async def ramp(run: Run, ctx: PhaseContext) -> dict[str, Any]:
    """Steps of rising rate without pauses; a step passes when acceptance p99 and end-to-end
    p95 stay within the SLOs and no accepted event waits longer than the e2e SLO unscored."""
    assert run.e2e is not None
    args = run.args
    steps: list[dict[str, Any]] = []
    rate = args.ramp_start
    sustained = 0.0
    saturation = None
    while rate <= args.ramp_max:
        result, summary = await run_phase(
            run, ctx, name=f"ramp {rate:,.0f}/s", rate=rate, duration=args.ramp_step, drain=False
        )
        now = time.time()
        stale = sum(
            1
            for waiting in run.e2e.pending.values()
            for _, at in waiting
            if now - at > args.slo_e2e_ms / 1000
        )
        e2e = report.percentiles(
            [ms for t, ms in run.e2e.latencies_ms if result.started <= t <= result.ended]
        )
        rows = _series(run, result.started, run.now())
        scored = [r["scored"] for r in rows if r.get("scored") is not None]
        scored_rate = (
            (scored[-1] - scored[0]) / max(rows[-1]["t"] - rows[0]["t"], 1e-9)
            if len(scored) > 1
            else 0.0
        )
        expected_ok = result.expected["accepted"]
        problems = []
        acc_p99 = summary["acceptance_ms"].get("p99", 0)
        if acc_p99 > args.slo_accept_ms:
            problems.append(f"acceptance p99 {acc_p99} ms")
        if e2e.get("count", 0) == 0 or e2e.get("p95", 0) > args.slo_e2e_ms:
            problems.append(f"e2e p95 {e2e.get('p95', 'unmeasured')} ms")
        if stale > 0.02 * max(expected_ok, 1):
            problems.append(f"{stale:,} events unscored after {args.slo_e2e_ms / 1000:.0f} s")
        if result.outcomes["accepted"] < 0.98 * expected_ok:
            problems.append(f"accepted {result.outcomes['accepted']:,} of {expected_ok:,}")
        if result.late_starts > 0.05 * max(result.requests, 1):
            problems.append(f"generator late on {result.late_starts} requests")
        step = {
            "rate": round(rate, 1),
            "started": result.started,
            "ended": result.ended,
            "accepted_per_s": summary["accepted_events_per_s"],
            "scored_per_s": round(scored_rate, 1),
            "acceptance_ms": summary["acceptance_ms"],
            "end_to_end_ms": e2e,
            "stale_unscored": stale,
            "passed": not problems,
            "problems": problems,
        }
        if run.sampler is not None:
            step["processes"] = run.sampler.summary(result.started, result.ended)
        steps.append(step)
        run.phases.append({"name": summary["name"], "offered_rate": rate, **summary})
        say(
            f"ramp step {rate:,.0f}/s: {'PASS' if not problems else 'FAIL'} "
            f"(accepted {summary['accepted_events_per_s']:,.0f}/s, scored {scored_rate:,.0f}/s, "
            f"accept p99 {acc_p99} ms, e2e p95 {e2e.get('p95', '-')} ms, stale {stale:,})"
            + (f": {'; '.join(problems)}" if problems else "")
        )
        if problems:
            saturation = round(scored_rate, 1)
            break
        sustained = rate
        rate *= args.ramp_factor
    if sustained == 0.0:
        sustained = max((saturation or args.ramp_start) * 0.8, 1.0)
    return {
        "steps": steps,
        "sustained_events_per_s": round(sustained, 1),
        "scored_per_s_at_saturation": saturation,
        "slo": {"e2e_p95_ms": args.slo_e2e_ms, "acceptance_p99_ms": args.slo_accept_ms},
    }


def bottleneck(phase: dict[str, Any], profiles: dict[str, Any], cores: int) -> dict[str, Any]:
    processes: dict[str, dict[str, float]] = phase.get("processes", {})
    if not processes:
        return {"verdict": "unknown (no process samples: remote stack)"}
    ranked = sorted(processes.items(), key=lambda kv: -kv[1]["cpu_pct_mean"])
    total = sum(v["cpu_pct_mean"] for _, v in ranked)
    top_name, top = ranked[0]
    lines = []
    if top_name == "loadtest" and top["cpu_pct_mean"] >= 80:
        lines.append("the load generator itself is CPU-bound: the figures understate the system")
    elif top_name in PYTHON_PROCESSES and top["cpu_pct_mean"] >= 80:
        lines.append(
            f"{top_name} is CPU-bound on its single event loop "
            f"({top['cpu_pct_mean']:.0f}% of one core on average)"
        )
    elif (phase.get("machine_cpu_pct") or total) >= 0.85 * cores * 100:
        lines.append(
            f"the machine is CPU-bound: {phase.get('machine_cpu_pct') or total:.0f}% of "
            f"{cores * 100}% busy (ours {total:.0f}%, the rest other processes)"
        )
    else:
        lines.append(
            f"no process saturated; busiest {top_name} at {top['cpu_pct_mean']:.0f}% "
            f"(total {total:.0f}% of {cores * 100}%)"
        )
    queues = {
        **{f"consumer {k}": v for k, v in phase.get("lag_max_by_group", {}).items()},
        **{f"{k} outbox": v for k, v in phase.get("outbox_max_by_service", {}).items()},
    }
    if queues:
        worst = sorted(queues.items(), key=lambda kv: -kv[1])[:3]
        lines.append("records queue up at " + ", ".join(f"{k} (max {v:,.0f})" for k, v in worst))
    hot = profiles.get(top_name, {}).get("top_own_inclusive", [])[:5]
    if hot:
        lines.append(
            f"hottest {top_name} code: "
            + "; ".join(f"{h['function']} {h['share_of_busy']:.0%}" for h in hot)
        )
    return {
        "verdict": ". ".join(lines),
        "cpu_share_pct": {n: v["cpu_pct_mean"] for n, v in ranked},
        "stack_cpu_pct_used": round(total, 1),
        "machine_cpu_pct_used": phase.get("machine_cpu_pct"),
        "machine_cpu_pct_available": cores * 100,
    }


def parse_rates(text: str, sustained: float | None) -> list[tuple[str, float]]:
    rates = []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        if part.endswith("%"):
            if sustained is None:
                raise SystemExit(f"--rates {part}: a percentage needs the ramp (drop --no-ramp)")
            rates.append((f"{part} of sustained", sustained * float(part[:-1]) / 100))
        else:
            rates.append((f"{float(part):,.0f}/s", float(part)))
    return rates


def phase_plan(args: argparse.Namespace, sustained: float | None) -> list[tuple[str, float, float]]:
    """(name, events/s, seconds) of every measured phase: the soak alone, `--rate`, or one phase
    per `--rates` entry."""
    if args.soak is not None:
        rate = args.rate if args.rate is not None else sustained
        if rate is None:
            raise SystemExit("--soak needs --rate or the ramp (drop --no-ramp)")
        return [(f"soak {args.soak:g} min", rate, args.soak * 60)]
    if args.rate is not None:
        return [(f"{args.rate:,.0f}/s", args.rate, args.duration)]
    return [(label, rate, args.duration) for label, rate in parse_rates(args.rates, sustained)]


async def measured_phases(
    run: Run, ctx: PhaseContext, plan: list[tuple[str, float, float]]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each planned phase, drained and reconciled; py-spy samples the services during the last
    (the busiest: the rates rise)."""
    args, stack = run.args, run.stack
    results: list[dict[str, Any]] = []
    profiles: dict[str, Any] = {}
    for n, (label, rate, duration) in enumerate(plan):
        profiling = None
        if n == len(plan) - 1 and args.profile_seconds > 0 and stack.pids:
            targets = {k: v for k, v in stack.pids.items() if k in PYTHON_PROCESSES}
            seconds = min(args.profile_seconds, max(duration - 4, 1))

            async def later(
                targets: dict[str, int] = targets, seconds: float = seconds, lead: float = duration
            ) -> dict[str, Any]:
                await asyncio.sleep(min(3.0, lead / 4))
                return await profile.record(
                    targets, seconds, args.reports_dir / f"profile-{run_id(run)}"
                )

            profiling = asyncio.create_task(later())
        _, summary = await run_phase(run, ctx, name=label, rate=rate, duration=duration, drain=True)
        if profiling is not None:
            profiles = await profiling
        results.append(summary)
        run.phases.append(summary)
        phase_done(summary)
    return results, profiles


def phase_done(summary: dict[str, Any]) -> None:
    rec = summary["reconciliation"]
    say(
        f"{summary['name']} done: accepted {rec['accepted_answers']:,} = stored "
        f"{rec['stored_in_activities']:,}; scored {rec['facts_in_scoring']:,}"
        + (f" (with {', '.join(rec['facts_counted_for'])})" if "facts_counted_for" in rec else "")
        + f" ({'exact' if rec['exact'] else 'MISMATCH: ' + '; '.join(rec['not_exact'])}); e2e "
        f"p99 {summary['end_to_end_ms'].get('p99', '-')} ms"
    )


ROSTER_TOPICS = ("teams.team.v1", "teams.member.v1", "teams.admin-unit.v1")
REPLICA_GROUPS = ("activities/", "scoring/")


async def import_phases(
    run: Run, ctx: PhaseContext, fixture: Fixture, *, rate: float, baseline: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Item 3 of issue 22: an import must not bury live scores. A slice of new teams and members
    goes through the teams bulk APIs while the load goes on at `rate` (the phase lasts at least
    `--duration`, as long as the import if longer); the phase after it follows at once, while
    the replicas and scoring still digest the import, and both are reconciled together."""
    args = run.args
    teams = args.import_teams or importer.default_teams(len(fixture.plan.teams))
    rows = importer.slice_plan(fixture.plan, teams=teams, tag=f"LI{run_id(run)}")
    say(f"import during load: {teams:,} new teams, {rows.members:,} members at {rate:,.0f}/s")
    done = asyncio.Event()
    timing: dict[str, float] = {}

    async def importing() -> dict[str, Any]:
        try:
            await asyncio.sleep(min(2.0, args.duration / 10))
            timing["started"] = round(run.now(), 1)
            return await importer.run_import(
                teams_url=run.stack.urls["teams"], headers=run.operator, rows=rows, say=say
            )
        except Exception as error:  # reported; the load and the reconciliation still run
            say(f"import failed: {error!r}")
            return {"error": repr(error)[-500:]}
        finally:
            timing["ended"] = round(run.now(), 1)
            done.set()

    task = asyncio.create_task(importing())
    during = await offer(
        run, ctx, name="import during load", rate=rate, duration=args.duration, until=done
    )
    imported = {"teams_in_slice": teams, "members_in_slice": rows.members, **(await task)}
    imported.update(timing)
    after = await offer(run, ctx, name="after import", rate=rate, duration=args.duration)
    await reconcile(run, ctx, [during, after])
    summaries = [during.summary, after.summary]
    for summary in summaries:
        run.phases.append(summary)
        phase_done(summary)
    imported["roster_records_published"] = sum(
        v for s in summaries for k, v in s["kafka_records"].items() if k in ROSTER_TOPICS
    )
    imported["replicas_caught_up_after_s"] = _replicas_caught_up(run, timing.get("ended"))
    during.summary["import"] = imported
    return summaries, import_verdict(baseline, during.summary, after.summary, imported)


def _replicas_caught_up(run: Run, since: float | None) -> float | None:
    """Seconds from the import's end until the activities and scoring groups have read every
    roster record (their lag on the teams topics back to 0)."""
    assert run.pipeline is not None
    if since is None:
        return None
    for row in run.pipeline.series:
        if row["t"] >= since and not any(
            v
            for k, v in row["lag"].items()
            if k.startswith(REPLICA_GROUPS) and k.endswith(ROSTER_TOPICS)
        ):
            return round(float(row["t"]) - since, 1)
    return None


def import_verdict(
    baseline: dict[str, Any],
    during: dict[str, Any],
    after: dict[str, Any],
    imported: dict[str, Any],
) -> dict[str, Any]:
    """Did live scores keep their latency? The e2e p99 during and after the import against the
    phase before it at the same rate, with the soak's bound: max(250 ms, 25 %) more at most."""
    e2e = {
        "before": baseline["end_to_end_ms"],
        "during": during["end_to_end_ms"],
        "after": after["end_to_end_ms"],
    }
    base = e2e["before"].get("p99")
    bound = soak.P99.of(base) if base is not None else None
    held = (
        "error" not in imported
        and bound is not None
        and all(e2e[k].get("p99", float("inf")) <= base + bound for k in ("during", "after"))
    )
    p99 = " / ".join(str(e2e[k].get("p99", "-")) for k in ("before", "during", "after"))
    what = (
        f"import failed: {imported['error']}"
        if "error" in imported
        else f"{imported['rows']:,} rows in {imported['seconds']} s ({imported['rows_per_s']:,.0f} "
        f"rows/s), {imported['roster_records_published']:,} roster records; replicas caught up "
        f"{imported['replicas_caught_up_after_s']} s after it"
    )
    return {
        "phases": {"before": baseline["name"], "during": during["name"], "after": after["name"]},
        "import": imported,
        "end_to_end_ms": e2e,
        "p99_bound_ms": round(base + bound, 1) if base is not None and bound is not None else None,
        "live_latency_held": held,
        "reconciled": during["reconciliation"]["exact"] and after["reconciliation"]["exact"],
        "line": f"{what}; live e2e p99 before / during / after {p99} ms: "
        + ("held" if held else "NOT held")
        + (f" (bound {base + bound:,.0f} ms)" if base is not None and bound is not None else ""),
    }


def soak_report(run: Run, phase: dict[str, Any]) -> dict[str, Any]:
    found = soak.windows(
        started=phase["started"],
        ended=phase["ended"],
        width=run.args.soak_window,
        end_to_end=run.e2e.latencies_ms if run.e2e else [],
        pipeline=run.pipeline.series if run.pipeline else [],
        processes=run.sampler.samples if run.sampler else [],
        accepted_per_second=run.accepted_per_second,
    )
    return {
        "phase": phase["name"],
        "rate": phase["offered_rate"],
        "window_s": run.args.soak_window,
        "windows": found,
        "verdict": soak.verdict(found, phase["offered_rate"]),
    }


def busiest_profile(phase: dict[str, Any], profiles: dict[str, Any]) -> dict[str, Any] | None:
    """The profile of the busiest service process of the phase (py-spy samples Python only:
    when PostgreSQL or Kafka is busier, the bottleneck verdict says so)."""
    processes: dict[str, dict[str, float]] = phase.get("processes", {})
    ranked = sorted(
        (n for n in PYTHON_PROCESSES if n in profiles and "error" not in profiles[n]),
        key=lambda n: -processes.get(n, {}).get("cpu_pct_mean", 0.0),
    )
    if not ranked:
        return None
    name = ranked[0]
    found = profiles[name]
    return {
        "process": name,
        "cpu_pct_mean": processes.get(name, {}).get("cpu_pct_mean"),
        "busy_share": found.get("busy_share"),
        "top_self": found.get("top_self", [])[:8],
        "top_own_inclusive": found.get("top_own_inclusive", [])[:8],
        "folded": found.get("folded"),
    }


# ----------------------------------------------------------------------------- the run


async def execute(run: Run) -> dict[str, Any]:
    args = run.args
    stack = run.stack
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
    async with (
        httpx.AsyncClient(timeout=60, headers=run.operator) as admin,
        httpx.AsyncClient(base_url=stack.urls["activities"], timeout=60, limits=limits) as client,
        BrokerLag(stack.bootstrap) as lag,
    ):
        fixture = await ensure_fixture(
            client=admin,
            teams_url=stack.urls["teams"],
            bootstrap=stack.bootstrap,
            state_dir=args.data_dir / "loadtest",
            scale=SCALES[args.scale],
            seed=args.seed,
            say=say,
        )
        teams_by_province = fixture.teams_by_province()
        keys = await ensure_partners(run, admin, sorted(teams_by_province))
        campaign = await ensure_targets_and_campaign(run, admin, fixture)
        say(f"{len(keys)} partner keys, province targets and campaign {campaign!r} ready")
        period = str(datetime.now(VN).year)
        run.pipeline = Pipeline(
            urls=stack.urls, headers=run.operator, lag=lag, period=period, t0=run.t0
        )
        say("waiting for every consumer group to catch up before measuring")
        warm = await idle(run, admin, None, timeout=args.warmup_timeout)
        if warm["complete"]:
            say(f"pipeline idle after {warm['seconds']} s")
        else:
            say(
                f"WARNING: pipeline still busy after {warm['seconds']} s ({warm}); measuring "
                "anyway: latencies include that backlog (scores are published oldest mark first)"
            )
        cal = run.calibration = await calibration(run)
        await idle(run, admin, None)

        stop = asyncio.Event()
        run.t0 = run.pipeline.t0 = time.time()  # the chart's zero: the start of the measurement
        run.pipeline.series.clear()
        run.e2e = EndToEnd(t0=run.t0)
        pids = {**stack.pids, "loadtest": os.getpid()} if stack.pids else {}
        run.sampler = ProcessSampler(pids, started=run.t0) if pids else None
        tasks = [
            asyncio.create_task(run.e2e.follow(stack.bootstrap, stop)),
            asyncio.create_task(run.pipeline.run(stop)),
            asyncio.create_task(progress_loop(run, stop)),
        ]
        if run.sampler is not None:
            tasks.append(asyncio.create_task(run.sampler.run(stop)))
        await asyncio.wait_for(run.e2e.ready.wait(), timeout=60)
        ctx = PhaseContext(
            factory=ActivityFactory(
                teams_by_province=teams_by_province,
                mix=Mix(
                    duplicate_share=args.duplicates,
                    invalid_share=args.invalid,
                    campaign_share=args.campaign_share,
                ),
                seed=args.seed,
                campaign_id=campaign,
            ),
            keys=keys,
            client=client,
            period=period,
            lag=lag,
        )
        ramp_report: dict[str, Any] | None = None
        results: list[dict[str, Any]] = []
        profiles: dict[str, Any] = {}
        imported: dict[str, Any] | None = None
        try:
            if args.rate is None and not args.no_ramp:
                say("ramp: searching the sustained rate")
                ramp_report = await ramp(run, ctx)
                say(
                    f"sustained rate: {ramp_report['sustained_events_per_s']:,.0f} events/s; "
                    "draining before the measured phases"
                )
                await idle(run, admin, None)
            sustained = ramp_report["sustained_events_per_s"] if ramp_report else None
            plan = phase_plan(args, sustained)
            results, profiles = await measured_phases(run, ctx, plan)
            if args.import_during_load:
                pair, imported = await import_phases(
                    run, ctx, fixture, rate=plan[-1][1], baseline=results[-1]
                )
                results += pair
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
    cores = os.cpu_count() or 1
    measured = [p for p in results if "import" not in p and p["name"] != "after import"]
    busiest = max(measured, key=lambda s: s["offered_rate"]) if measured else {}
    verdict = bottleneck(busiest, profiles, cores)
    sustained = ramp_report["sustained_events_per_s"] if ramp_report else None
    ratios = {}
    if sustained:
        for key in ("kafka_records_per_s", "postgres_copy_rows_per_s"):
            if cal.get(key):
                ratios[f"sustained_over_{key}"] = round(sustained / cal[key], 4)
    return {
        "title": f"CDT national rollup load test ({args.scale}, seed {args.seed})",
        "command": " ".join(["python -m tests.load.loadtest", *sys.argv[1:]]),
        "started_at": datetime.fromtimestamp(run.t0, UTC).isoformat(),
        "machine": {
            "cpus": cores,
            "load_average_at_end": os.getloadavg(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "stack": {
            "mode": stack.mode,
            "urls": stack.urls,
            "kafka": stack.bootstrap,
            "settings": stack.settings,
            "processes": stack.pids,
        },
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "fixture": {
            "scale": args.scale,
            "seed": args.seed,
            "reused": fixture.reused,
            "provinces": len(teams_by_province),
            "teams": len(fixture.roster),
            "members": sum(len(r.member_ids) for r in fixture.roster.values()),
            "villages": len(fixture.plan.villages),
            "load": fixture.load,
        },
        "warmup": warm,
        "calibration": cal,
        "ramp": ramp_report,
        "phases": results,
        "ratios": ratios,
        "bottleneck": verdict,
        "profile": profiles,
        "busiest_profile": busiest_profile(busiest, profiles),
        "import_during_load": imported,
        "soak": soak_report(run, results[0]) if args.soak is not None and results else None,
        "end_to_end_unmatched_total": run.e2e.unmatched() if run.e2e else None,
        "reconciled": bool(results) and all(p["reconciliation"]["exact"] for p in results),
        "import_failed": bool(imported and "error" in imported["import"]),
    }


def run_id(run: Run) -> str:
    return datetime.fromtimestamp(run.t0).strftime("%Y%m%d-%H%M%S")


def _ps(values: dict[str, Any], *keys: str) -> str:
    return "/".join(str(values.get(k, "-")) for k in keys)


def _throughput_lines(p: dict[str, Any]) -> list[str]:
    """Scored and alerted rates, Kafka records per event, calibration ratios, lag by group."""
    pad = " " * 22
    ratios = p.get("calibration_ratios", {})
    shares = ", ".join(
        f"{k.replace('_over_', '/').replace('_', ' ')} {v:.2%}" for k, v in ratios.items()
    )
    lines = [
        f"{pad}scored {p.get('scored_events_per_s', '-')}/s, alerted {p.get('alerts_per_s', '-')}/s"
        f"; {p['kafka_records_per_accepted_event']} Kafka records/event"
        + (f"; of calibration: {shares}" if shares else "")
    ]
    worst = sorted(p.get("lag_max_by_group", {}).items(), key=lambda kv: -kv[1])[:4]
    if worst:
        lines.append(f"{pad}max lag: " + ", ".join(f"{k} {v:,.0f}" for k, v in worst))
    return lines


def _soak_lines(found: dict[str, Any]) -> list[str]:
    lines = [
        f"soak: {found['phase']} at {found['rate']:,.0f}/s, {len(found['windows'])} windows of "
        f"{found['window_s']:g} s",
        f"  {'window':>6}{'accepted/s':>11}{'e2e p50/p99 ms':>18}{'lag (sum of means)':>20}"
        "  rss MB",
    ]
    for w in found["windows"]:
        rss = ", ".join(f"{k} {v:.0f}" for k, v in w["rss_mb"].items())
        lines.append(
            f"  {w['window']:>6}{w['accepted_per_s']:>11,.0f}"
            f"{_ps(w['e2e_ms'], 'p50', 'p99'):>18}{sum(w['lag_mean'].values()):>20,.0f}  {rss}"
        )
    lines.append(f"soak verdict: {found['verdict']['line']}")
    return lines


def print_summary(data: dict[str, Any], json_path: Path, png_path: Path) -> None:
    out = ["", "=" * 100, data["title"], "=" * 100]
    fx = data["fixture"]
    out.append(
        f"fixture: {fx['provinces']} provinces, {fx['villages']:,} villages, "
        f"{fx['teams']:,} teams, "
        f"{fx['members']:,} members ({'reused' if fx['reused'] else 'loaded now'})"
    )
    cal = data["calibration"]
    if not cal.get("skipped"):
        kafka, copy = cal.get("kafka_records_per_s"), cal.get("postgres_copy_rows_per_s")
        out.append(
            f"calibration: Kafka alone {'failed' if kafka is None else f'{kafka:,}'} records/s, "
            f"PostgreSQL COPY {'failed' if copy is None else f'{copy:,}'} rows/s"
        )
    if data["ramp"]:
        r = data["ramp"]
        out.append(
            f"sustained end to end: {r['sustained_events_per_s']:,.0f} events/s "
            f"(scored {r['scored_per_s_at_saturation'] or '-'} events/s at saturation)"
        )
        for key, value in data["ratios"].items():
            out.append(f"  {key}: {value:.2%}")
    out.append(
        f"{'phase':<22}{'offered/s':>10}{'accepted/s':>11}{'acc p50/p99/p99.9 ms':>24}"
        f"{'e2e p50/p95/p99/p99.9 ms':>30}{'reconciled':>12}"
    )
    for p in data["phases"]:
        a, e = p["acceptance_ms"], p["end_to_end_ms"]
        out.append(
            f"{p['name']:<22}{p['offered_rate']:>10,.0f}{p['accepted_events_per_s']:>11,.0f}"
            f" {_ps(a, 'p50', 'p99', 'p99.9'):>23} {_ps(e, 'p50', 'p95', 'p99', 'p99.9'):>29}"
            f"{'exact' if p['reconciliation']['exact'] else 'NO':>12}"
        )
        rec = p["reconciliation"]
        out.append(
            f"{'':<22}accepted {rec['accepted_answers']:,} = stored {rec['stored_in_activities']:,}"
            f" = scored {rec['facts_in_scoring']:,}"
            + (
                f" (with {', '.join(rec['facts_counted_for'])})"
                if "facts_counted_for" in rec
                else ""
            )
            + f"; rejected {rec['rejected']:,}; duplicates "
            f"{rec['duplicates']:,}; e2e matched {rec['e2e_matched']:,} (unmatched "
            f"{rec['e2e_unmatched']}); max lag {p['lag_max']:,}, "
            f"outbox {p['outbox_backlog_max']:,.0f}"
        )
        if rec.get("not_exact"):
            out.append(f"{'':<22}not exact: {'; '.join(rec['not_exact'])}")
        out += _throughput_lines(p)
        if p.get("processes"):
            out.append(
                f"{'':<22}cpu % (mean/peak), rss MB: "
                + ", ".join(
                    f"{n} {v['cpu_pct_mean']:.0f}/{v['cpu_pct_peak']:.0f} {v['rss_mb_peak']:.0f}"
                    for n, v in p["processes"].items()
                )
            )
    if data.get("import_during_load"):
        out.append(f"import during load: {data['import_during_load']['line']}")
    if data.get("soak"):
        out += _soak_lines(data["soak"])
    out.append(f"bottleneck: {data['bottleneck']['verdict']}")
    if found := data.get("busiest_profile"):
        out.append(
            f"profile of the busiest service, {found['process']} ({found['cpu_pct_mean']}% cpu, "
            f"{found['busy_share']:.0%} of samples busy; {found['folded']}):"
        )
        out += [
            f"  {h['share_of_busy']:>5.0%}  {h['function']}" for h in found["top_own_inclusive"][:5]
        ]
    out.append(f"report: {json_path}")
    out.append(f"chart:  {png_path}")
    out.append("=" * 100)
    print("\n".join(out), flush=True)


def _import_span(data: dict[str, Any]) -> list[tuple[float, float, str]]:
    found = (data.get("import_during_load") or {}).get("import", {})
    if "started" not in found or "ended" not in found:
        return []
    return [(found["started"], found["ended"], "bulk import")]


def open_stack(args: argparse.Namespace) -> stacks.Stack:
    auto_ports = args.ports == "auto"
    if auto_ports:
        from devstack.procs import free_port

        ports = {name: free_port() for name in stacks.SERVICES}
    else:
        ports = dict(zip(stacks.SERVICES, map(int, args.ports.split(",")), strict=True))
    if not args.start and not auto_ports:
        found = stacks.connect(
            host=args.base_url.rstrip("/"),
            ports=ports,
            data_dir=args.data_dir,
            token=args.token,
            bootstrap=args.kafka,
            database_url=args.database_url,
            mode="reused",
        )
        if found is not None:
            say(f"using the running stack at {args.base_url} ({len(found.pids)} local processes)")
            return found
        if args.base_url.rstrip("/") not in ("http://127.0.0.1", "http://localhost"):
            raise SystemExit(f"no services answer at {args.base_url}")
    say("no running stack: starting PostgreSQL, Kafka and the four services (devstack)")
    return stacks.start(data_dir=args.data_dir, ports=ports, trace_ratio=args.trace_ratio, say=say)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.data_dir = args.data_dir.resolve()
    args.reports_dir = args.reports_dir.resolve()
    stack = open_stack(args)
    try:
        run = Run(args=args, stack=stack)
        data = asyncio.run(execute(run))
    finally:
        if stack.mode == "started":
            say("stopping the stack started for this run")
            stack.stop()
    name = f"loadtest-{run_id(run)}"
    json_path = report.write_json(data, args.reports_dir / f"{name}.json")
    png_path = report.chart(
        args.reports_dir / f"{name}.png",
        title=data["title"],
        phases=run.phases,
        accepted_per_second=run.accepted_per_second,
        acceptance=run.acceptance,
        end_to_end=run.e2e.latencies_ms if run.e2e else [],
        pipeline=run.pipeline.series if run.pipeline else [],
        processes=run.sampler.samples if run.sampler else [],
        spans=_import_span(data),
        windows=data["soak"]["windows"] if data.get("soak") else [],
    )
    print_summary(data, json_path, png_path)
    return 0 if data["reconciled"] and not data["import_failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
