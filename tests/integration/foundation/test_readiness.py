"""Readiness follows the backing services: false while Postgres or Kafka is down, true again
when they return. Uses its own Postgres and Kafka so stopping them disturbs no other test."""

from __future__ import annotations

import asyncio

import httpx

from common.settings import ServiceSettings
from devstack.kafka import LocalKafka
from devstack.postgres import LocalPostgres
from teams.bootstrap import build_app, build_runtime
from tests.helpers import OPERATOR, eventually, running


async def test_readyz_tracks_postgres_and_kafka(workdir) -> None:  # type: ignore[no-untyped-def]
    postgres = LocalPostgres(workdir / "readiness-pg")
    kafka = LocalKafka(workdir / "readiness-kafka", heap="256m")
    database_url = await asyncio.to_thread(postgres.start)
    bootstrap = await asyncio.to_thread(kafka.start)
    settings = ServiceSettings(
        service_name="teams",
        database_url=database_url,
        kafka_bootstrap_servers=bootstrap,
        CDT_TRACES_EXPORTER="none",
    )
    runtime = build_runtime(settings)
    try:
        async with running(runtime, build_app(runtime), workers=False) as client:

            async def readiness(expected: int) -> bool:
                reply: httpx.Response = await client.get("/readyz")
                return reply.status_code == expected

            await eventually(lambda: readiness(200), timeout=30, what="ready")
            assert (await client.get("/healthz")).status_code == 200

            await asyncio.to_thread(postgres.stop)
            await eventually(lambda: readiness(503), timeout=15, what="not ready without Postgres")
            body = (await client.get("/readyz")).json()
            assert body["checks"]["database"] is False and body["checks"]["kafka"] is True
            await asyncio.to_thread(postgres.start)
            await eventually(lambda: readiness(200), timeout=30, what="ready after Postgres")

            await asyncio.to_thread(kafka.stop)
            await eventually(lambda: readiness(503), timeout=15, what="not ready without Kafka")
            body = (await client.get("/readyz")).json()
            assert body["checks"]["kafka"] is False and body["checks"]["database"] is True
            await asyncio.to_thread(kafka.start)
            await eventually(lambda: readiness(200), timeout=60, what="ready after Kafka")
    finally:
        await asyncio.to_thread(kafka.stop)
        await asyncio.to_thread(postgres.stop)


async def test_postgres_crash_gives_fast_503s_then_pools_recover(workdir) -> None:  # type: ignore[no-untyped-def]
    postgres = LocalPostgres(workdir / "crash-pg")
    kafka = LocalKafka(workdir / "crash-kafka", heap="256m")
    database_url = await asyncio.to_thread(postgres.start)
    bootstrap = await asyncio.to_thread(kafka.start)
    settings = ServiceSettings(
        service_name="teams",
        database_url=database_url,
        kafka_bootstrap_servers=bootstrap,
        CDT_TRACES_EXPORTER="none",
        CDT_ADMIN_TOKEN=OPERATOR["Authorization"].split()[1],
    )
    runtime = build_runtime(settings)
    unknown = "/v1/teams/00000000-0000-7000-8000-000000000000"
    try:
        async with running(runtime, build_app(runtime), workers=False) as client:
            assert (await client.get(unknown, headers=OPERATOR)).status_code == 404
            await asyncio.to_thread(postgres.stop, mode="immediate")  # a crash, not a shutdown
            for _ in range(5):
                started = asyncio.get_running_loop().time()
                reply = await client.get(unknown, headers=OPERATOR)
                elapsed = asyncio.get_running_loop().time() - started
                assert reply.status_code == 503, reply.text
                assert reply.headers["content-type"] == "application/problem+json"
                assert reply.headers["retry-after"] == "2"
                assert elapsed < 8, f"a request hung {elapsed:.1f} s"
            await asyncio.to_thread(postgres.start)

            async def recovered() -> bool:
                return (await client.get(unknown, headers=OPERATOR)).status_code == 404

            await eventually(recovered, timeout=30, what="the pool to recover")
    finally:
        await asyncio.to_thread(kafka.stop)
        await asyncio.to_thread(postgres.stop)


async def test_kafka_outage_writes_continue_into_the_outbox_then_drain(workdir) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import func, select
    from sqlalchemy.ext.asyncio import create_async_engine

    from common.kafka import ensure_topics
    from tests.integration.foundation import plumbing
    from tests.integration.foundation.test_outbox_and_consumer import applied_counts, event

    postgres = LocalPostgres(workdir / "outage-pg")
    kafka = LocalKafka(workdir / "outage-kafka", heap="256m")
    database_url = await asyncio.to_thread(postgres.start)
    bootstrap = await asyncio.to_thread(kafka.start)
    engine = create_async_engine(database_url)
    await plumbing.create_schema(engine)
    await ensure_topics(
        bootstrap, specs=[plumbing.topic_spec("outage"), plumbing.dlt_spec("outage", "g-outage")]
    )
    topic = plumbing.topic_spec("outage").name
    runtime = plumbing.build_runtime(
        topic="outage",
        group="g-outage",
        database_url=database_url,
        kafka_bootstrap_servers=bootstrap,
        CDT_TRACES_EXPORTER="none",
        CDT_RELAY_POLL_SECONDS=0.2,
    )
    outbox = plumbing.tables.outbox

    async def write(seqs: range) -> list[object]:
        written = []
        for seq in seqs:
            async with runtime.unit_of_work() as uow:
                e = event(key=f"k{seq % 4}", seq=seq, topic=topic)
                uow.publish(e)
                await uow.commit()
                written.append(e.id)
        return written

    async def backlog() -> int:
        async with engine.connect() as conn:
            return int(
                await conn.scalar(
                    select(func.count()).select_from(outbox).where(outbox.c.published_at.is_(None))
                )
                or 0
            )

    await runtime.start(workers=True)
    try:
        ids = await write(range(10))
        await eventually(lambda: _applied(engine, 10), timeout=30, what="first 10 applied")

        await asyncio.to_thread(kafka.stop)
        ids += await write(range(10, 40))  # the write side does not need the broker
        assert await backlog() == 30
        await asyncio.sleep(3)
        assert await backlog() == 30, "nothing is marked published while Kafka is down"

        await asyncio.to_thread(kafka.start)
        await eventually(lambda: _applied(engine, 40), timeout=90, what="backlog drained")
        assert await backlog() == 0
        counts = await applied_counts(engine, "g-outage")
        assert set(counts) == set(ids) and set(counts.values()) == {1}
    finally:
        await runtime.stop()
        await engine.dispose()
        await asyncio.to_thread(kafka.stop)
        await asyncio.to_thread(postgres.stop)


async def _applied(engine, expected: int) -> bool:  # type: ignore[no-untyped-def]
    from tests.integration.foundation.test_outbox_and_consumer import applied_counts

    return len(await applied_counts(engine, "g-outage")) == expected
