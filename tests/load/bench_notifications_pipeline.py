"""Benchmark (not a test): the notifications service's three hot paths, against real Postgres.

    python -m tests.load.bench_notifications_pipeline [--activities 50000] [--teams 74422]
        [--alerts 2000] [--scores 50000] [--score-batch 5000] [--only-scores]

Starts its own Postgres + Kafka (or uses DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS) and drives the
service in-process:
1. the consumer handler on batches of 500 ActivityRecorded events (activity log, team touch,
   the three suspicious-activity checks, inactivity re-evaluation): events/s;
2. the scheduled inactivity sweep over a national-size replica (74,422 teams): the first sweep
   that raises an alert for every silent team, then a steady-state sweep that raises none;
3. webhook delivery: alerts fanned out to one subscription on a local receiver, drained by the
   delivery worker: deliveries/s;
4. the score stream: `--scores` ScoreUpdated records (teams, villages, communes, provinces over
   three periods, versions rising, some scores dropping) decoded from their Kafka bytes and
   headers and judged by the consumer handler in batches of `--score-batch`: records/s, Python
   CPU per record and the alerts raised.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [
    str(ROOT / p) for p in ("libs", "services", "deploy", ".") if str(ROOT / p) not in sys.path
]

import orjson  # noqa: E402
from sqlalchemy import func, select  # noqa: E402
from uuid_utils.compat import uuid7  # noqa: E402

from common.contracts.activities import ActivityRecorded  # noqa: E402
from common.contracts.scoring import ScoreComponent, ScoreUpdated  # noqa: E402
from common.contracts.teams import UnitPath  # noqa: E402
from common.envelope import (  # noqa: E402
    EventContract,
    InboundEvent,
    OutboundEvent,
    decode_record,
    kafka_headers,
)
from common.kafka import ensure_topics  # noqa: E402
from common.main import settle_heap  # noqa: E402
from devstack.infra import Infra  # noqa: E402
from notifications import adapters  # noqa: E402
from notifications.bootstrap import NotificationsRuntime  # noqa: E402
from notifications.delivery import DeliveryWorker  # noqa: E402
from notifications.handlers import notifications_handler  # noqa: E402
from notifications.settings import NotificationsSettings  # noqa: E402
from tests.integration.notifications.support import MutableClock, Receiver, answer  # noqa: E402
from tests.load.bench_infra import bench_infra  # noqa: E402

BATCH = 500


def kafka_record(contract: EventContract, offset: int) -> dict[str, Any]:
    """The record as the relay writes it to Kafka: CloudEvents headers, JSON value."""
    out = OutboundEvent.of(contract, source="/bench")
    return {
        "topic": contract.TOPIC.name,
        "partition": 0,
        "offset": offset,
        "key": out.key.encode(),
        "value": orjson.dumps(out.data),
        "headers": kafka_headers(out.ce_headers()),
    }


def inbound(contract: EventContract, offset: int) -> InboundEvent:
    return InboundEvent(
        id=uuid7(),
        type=contract.CE_TYPE,
        source="/bench",
        subject=None,
        time=None,
        topic=contract.TOPIC.name,
        partition=0,
        offset=offset,
        key=None,
        value=orjson.dumps(contract.model_dump(mode="json")),
        trace_headers={},
    )


async def bench_activities(runtime: NotificationsRuntime, clock: MutableClock, n: int) -> None:
    handler = notifications_handler(clock, score_states=runtime.score_states)
    rng = random.Random(7)
    teams = [(uuid.uuid4(), f"{rng.randint(1, 34):02d}") for _ in range(2000)]
    members = {t: [uuid.uuid4() for _ in range(5)] for t, _ in teams}
    now = datetime.now(UTC)
    events = []
    for i in range(n):
        team_id, province = rng.choice(teams)
        occurred = now - timedelta(minutes=rng.randint(0, 60 * 24 * 30))
        events.append(
            inbound(
                ActivityRecorded(
                    id=uuid.uuid4(),
                    team_id=team_id,
                    member_id=rng.choice(members[team_id]),
                    occurred_at=occurred,
                    recorded_at=occurred + timedelta(minutes=rng.randint(1, 600)),
                    kind="household_visit",
                    household_hash=f"h{rng.randint(0, n)}",
                    unit_path=UnitPath(province=province),
                ),
                i,
            )
        )
    started = time.perf_counter()
    for i in range(0, n, BATCH):
        async with runtime.unit_of_work() as uow:
            await handler(uow, events[i : i + BATCH])
            await uow.commit()
    seconds = time.perf_counter() - started
    print(f"[activities] {n} events in {seconds:.1f} s: {n / seconds:,.0f} events/s", flush=True)


async def bench_sweep(runtime: NotificationsRuntime, clock: MutableClock, n: int) -> None:
    rng = random.Random(11)
    rows = []
    for _ in range(n):
        rows.append(
            {
                "id": uuid.uuid4(),
                "unit_path": [f"{rng.randint(1, 34):02d}"],
                "last_activity_at": clock.now - timedelta(days=rng.randint(0, 10)),
                "first_seen_at": clock.now - timedelta(days=400),
            }
        )
    async with runtime.unit_of_work() as uow:
        for i in range(0, n, 5000):
            await adapters.touch_teams(uow.session, rows[i : i + 5000])
        await uow.commit()
    for label in ("steady (few silent)", "all silent: raise", "all silent: steady"):
        if label.startswith("all silent: raise"):
            clock.advance(days=60)
        started = time.perf_counter()
        result = await runtime.sweep_once()
        seconds = time.perf_counter() - started
        print(f"[sweep] {label}: {result} (raised, resolved) in {seconds:.1f} s", flush=True)


async def bench_deliveries(runtime: NotificationsRuntime, clock: MutableClock, n: int) -> None:
    async with Receiver(answer()) as receiver:
        province = "B" + uuid.uuid4().hex[:6]
        async with runtime.unit_of_work() as uow:
            await adapters.add_subscription(
                uow.session,
                {
                    "id": uuid7(),
                    "url": receiver.url,
                    "scope": province,
                    "alert_types": ["target_reached"],
                    "secret": "whsec_bench",
                    "created_at": datetime.now(UTC),
                },
            )
            await uow.commit()
        handler = notifications_handler(clock, score_states=runtime.score_states)
        reached = [ScoreComponent(criterion="c", points=1, max_points=1, value=1, target=1)]
        scores = [
            inbound(
                ScoreUpdated(
                    subject_type="province",
                    subject_id=province,
                    period=f"p{i}",
                    criteria_set="bench@1",
                    score=1,
                    components=reached,
                    version=1,
                    computed_at=clock.now,
                ),
                i,
            )
            for i in range(n)
        ]
        for i in range(0, n, BATCH):
            async with runtime.unit_of_work() as uow:
                await handler(uow, scores[i : i + BATCH])
                await uow.commit()
        stopping = asyncio.Event()
        worker = DeliveryWorker(
            sessions=runtime.sessions, settings=runtime.notifications, stopping=stopping
        )
        started = time.perf_counter()
        task = asyncio.create_task(worker.run())
        deliveries = adapters.deliveries_table
        while True:
            async with runtime.sessions() as session:
                done = await session.scalar(
                    select(func.count())
                    .select_from(deliveries)
                    .where(deliveries.c.status == "succeeded")
                )
            if (done or 0) >= n:
                break
            await asyncio.sleep(0.2)
        seconds = time.perf_counter() - started
        stopping.set()
        await task
        print(
            f"[deliveries] {n} signed webhooks in {seconds:.1f} s: {n / seconds:,.0f}/s "
            f"(receiver saw {len(receiver.requests)})",
            flush=True,
        )


def _score_components(rng: random.Random) -> list[ScoreComponent]:
    return [
        ScoreComponent(
            criterion=f"criterion_{i}",
            group="activity",
            points=rng.randint(0, 10),
            max_points=10,
            # now and then a criterion reaches its target (an alert to raise once)
            value=20.0 if rng.random() < 0.002 else rng.random() * 19,
            target=20,
        )
        for i in range(13)
    ]


async def bench_scores(
    runtime: NotificationsRuntime, clock: MutableClock, n: int, *, batch: int
) -> None:
    """Score records as scoring publishes them: most for teams, then their units."""
    rng = random.Random(13)
    teams = []
    for _ in range(5_000):
        path = [f"{rng.randint(1, 63):02d}", f"D{rng.randint(1, 700)}", f"C{rng.randint(1, 9000)}"]
        teams.append(
            {
                "id": uuid.uuid4(),
                "unit_path": path,
                "last_activity_at": clock.now,
                "first_seen_at": clock.now,
            }
        )
    async with runtime.unit_of_work() as uow:
        await adapters.touch_teams(uow.session, teams)
        await uow.commit()
    subjects: list[tuple[str, str]] = [("team", str(t["id"])) for t in teams]
    subjects += [("commune", t["unit_path"][2]) for t in teams[:1500]]
    subjects += [("province", f"{p:02d}") for p in range(1, 64)]
    versions: dict[tuple[str, str, str], int] = {}
    scores: dict[tuple[str, str, str], float] = {}
    records = []
    for i in range(n):
        subject_type, subject_id = rng.choice(subjects)
        key = (subject_type, subject_id, rng.choice(["2026-12", "2026-Q4", "2026"]))
        versions[key] = versions.get(key, 0) + 1
        # Mostly rising, now and then a drop of 10-30 points (alerts to raise and resolve).
        previous = scores.get(key, 50.0)
        step = -rng.uniform(10, 30) if rng.random() < 0.05 else rng.uniform(0, 3)
        scores[key] = min(max(previous + step, 0.0), 100.0)
        records.append(
            kafka_record(
                ScoreUpdated(
                    subject_type=subject_type,  # type: ignore[arg-type]
                    subject_id=subject_id,
                    period=key[2],
                    criteria_set="default@1",
                    score=round(scores[key], 2),
                    components=_score_components(rng),
                    indicators={"activities": float(versions[key]), "members": 5.0},
                    version=versions[key],
                    computed_at=clock.now,
                ),
                i,
            )
        )
    handler = notifications_handler(clock, score_states=runtime.score_states)
    alerts = adapters.alerts_table
    settle_heap()  # as the worker does: the prepared records stay out of collection
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(0, n, batch):
        async with runtime.unit_of_work() as uow:
            # decoded in the timed loop, as the consumer runner decodes what it polls
            await handler(uow, [decode_record(**r) for r in records[i : i + batch]])
            await uow.commit()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    async with runtime.sessions() as session:
        raised = await session.scalar(select(func.count()).select_from(alerts))
    print(
        f"[scores] {n:,} score records in batches of {batch:,} in {seconds:.1f} s: "
        f"{n / seconds:,.0f} records/s (Python CPU {cpu / n * 1e6:,.0f} µs a record); "
        f"{raised:,} alerts in the table",
        flush=True,
    )


async def run(args: argparse.Namespace, infra: Infra) -> None:
    await ensure_topics(infra.kafka_bootstrap_servers)
    os.environ.update(
        {
            "DATABASE_URL": infra.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap_servers,
            "CDT_TRACES_EXPORTER": "none",
            "CDT_TRACE_SQL": "false",
        }
    )
    settings = NotificationsSettings(
        CDT_WEBHOOK_ALLOW_PRIVATE=True,
        CDT_WEBHOOK_BATCH_SIZE=100,
        CDT_WEBHOOK_CONCURRENCY=50,
        CDT_WEBHOOK_POLL_SECONDS=0.05,
    )
    clock = MutableClock()
    runtime = NotificationsRuntime(settings=settings, clock=clock)
    await runtime.start(workers=False)
    try:
        if args.scores:
            await bench_scores(runtime, clock, args.scores, batch=args.score_batch)
        if args.only_scores:
            return
        await bench_activities(runtime, clock, args.activities)
        await bench_sweep(runtime, clock, args.teams)
        await bench_deliveries(runtime, clock, args.alerts)
    finally:
        await runtime.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--activities", type=int, default=50_000)
    parser.add_argument("--teams", type=int, default=74_422)
    parser.add_argument("--alerts", type=int, default=2_000)
    parser.add_argument("--scores", type=int, default=50_000)
    parser.add_argument("--score-batch", type=int, default=5_000)
    parser.add_argument("--only-scores", action="store_true", help="skip the other phases")
    args = parser.parse_args()
    with bench_infra("cdt-bench-notifications-", kafka_heap="512m") as (infra, _):
        asyncio.run(run(args, infra))


if __name__ == "__main__":
    main()
