"""Sustained scoring throughput: events/s consumed, applied and committed (not a test).

`python -m tests.load.bench_scoring_throughput [events] [teams] [batch]`: pre-loads `events`
ActivityRecorded to Kafka, then starts the scoring service (consumer + publisher + relay) and
times the consumption of the backlog, then the coalesced publication of the scores.
"""

# isort: skip_file
# (the support module must be imported first: it sets the import roots)
from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time

from tests.load.bench_meter import CpuMeter, reset_statements, top_statements
from tests.load.bench_scoring_support import activity_fields, hierarchy, infrastructure

from aiokafka import AIOKafkaProducer  # after the import roots are set
from common.kafka import kafka_client_options
from sqlalchemy import func, select, text

from common.contracts.activities import ActivityRecorded
from common.envelope import OutboundEvent, kafka_headers
from common.main import settle_heap
from scoring import adapters
from scoring.bootstrap import build_runtime
from scoring.settings import ScoringSettings


async def unsent(runtime) -> int:  # type: ignore[no-untyped-def]
    """Score updates written and not on Kafka yet: outbox rows not published, and versions in
    the score changelog beyond the relay's position (where the changelog exists: the bench
    also runs on revisions before it, for comparisons)."""
    async with runtime.sessions() as session:
        outbox = await session.scalar(
            text("SELECT count(*) FROM scoring.outbox WHERE published_at IS NULL")
        )
        versions = await adapters.unpublished_count(session) if await has_changelog(session) else 0
    return int(outbox or 0) + versions


async def has_changelog(session) -> bool:  # type: ignore[no-untyped-def]
    return bool(
        await session.scalar(text("SELECT to_regclass('scoring.score_changelog') IS NOT NULL"))
    )


async def produce(bootstrap: str, events: int, teams: int) -> float:
    rng = random.Random(5)
    roster = hierarchy(teams, rng)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=20,
        **kafka_client_options(),
    )
    await producer.start()
    started = time.perf_counter()
    try:
        pending = []
        for _ in range(events):
            contract = ActivityRecorded(**activity_fields(rng.choice(roster), rng))  # type: ignore[arg-type]
            event = OutboundEvent.of(contract, source="/cdt/activities")
            pending.append(
                await producer.send(
                    event.topic,
                    key=event.key.encode(),
                    value=json.dumps(event.data).encode(),
                    headers=kafka_headers(event.ce_headers()),
                )
            )
        await producer.flush()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def count(runtime, table) -> int:  # type: ignore[no-untyped-def]
    async with runtime.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(table)) or 0)


async def bench(events: int, teams: int, *, postgres_pid: int | None) -> None:
    settings = ScoringSettings()
    produce_s = await produce(settings.kafka_bootstrap_servers, events, teams)
    print(f"produced {events:,} events in {produce_s:.1f} s", flush=True)
    runtime = build_runtime(settings)
    await runtime.migrate()
    processed = runtime.tables.processed_events
    settle_heap()  # as `python -m scoring worker` does
    profiled = await reset_statements(runtime)
    meter = CpuMeter(postgres_pid).start()
    await runtime.start(workers=True)
    try:
        first = None
        while True:
            done = await count(runtime, processed)
            if done and first is None:
                first = (time.perf_counter(), done)
            if done >= events:
                break
            await asyncio.sleep(0.25)
        end = time.perf_counter()
        assert first is not None
        rate = (events - first[1]) / max(end - first[0], 1e-9)
        consumed = f"consumed {events:,} events in {end - first[0]:.1f} s"
        print(f"{consumed}: {rate:,.0f} events/s sustained", flush=True)
        consuming = meter.stop()
        print(f"  consumption: {consuming.per_item(events)}", flush=True)
        meter.start()
        while (
            await count(runtime, adapters.dirty_subjects)
            or await count(runtime, adapters.state_marks)
            or await unsent(runtime)
        ):
            await asyncio.sleep(0.25)
        published = time.perf_counter() - end
        draining = meter.stop()
        async with runtime.sessions() as session:
            updates = await session.scalar(select(func.count()).select_from(runtime.tables.outbox))
            if await has_changelog(session):
                updates += await session.scalar(
                    text("SELECT count(*) FROM scoring.score_history WHERE seq IS NOT NULL")
                )
            subject_periods = await session.scalar(
                select(func.count()).select_from(adapters.scores)
            )
        print(
            f"publication drained {published:.1f} s after the last batch; "
            f"{updates:,} ScoreUpdated (each also sent as a ScoreLatest) for "
            f"{subject_periods:,} subject-periods: "
            f"{events / max(subject_periods or 1, 1):.1f} events per update",
            flush=True,
        )
        print(f"  drain after the last batch: {draining.per_item(events)}", flush=True)
        if profiled:
            print("PostgreSQL's costliest statements (whole run, per event consumed):")
            for line in await top_statements(runtime, items=events):
                print(f"  {line}")
    finally:
        await runtime.stop()


def main() -> None:
    events = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    teams = int(sys.argv[2]) if len(sys.argv) > 2 else 2_000
    if len(sys.argv) > 3:
        os.environ["CDT_CONSUMER_BATCH_SIZE"] = sys.argv[3]
    with infrastructure() as infra:
        print(
            f"scoring throughput: {events:,} activities over {teams:,} teams, consumer batch "
            f"{ScoringSettings().consumer_batch_size:,}",
            flush=True,
        )
        postgres = infra.postgres.proc if infra.postgres else None
        asyncio.run(bench(events, teams, postgres_pid=postgres.pid if postgres else None))


if __name__ == "__main__":
    main()
