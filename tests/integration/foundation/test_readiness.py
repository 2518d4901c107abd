"""Readiness follows the backing services: false while Postgres or Kafka is down, true again
when they return. Uses its own Postgres and Kafka so stopping them disturbs no other test."""

from __future__ import annotations

import asyncio

import httpx

from common.settings import ServiceSettings
from devstack.kafka import LocalKafka
from devstack.postgres import LocalPostgres
from teams.bootstrap import build_app, build_runtime
from tests.helpers import eventually, running


async def test_readyz_tracks_postgres_and_kafka(workdir) -> None:  # type: ignore[no-untyped-def]
    postgres = LocalPostgres(workdir / "readiness-pg")
    kafka = LocalKafka(workdir / "readiness-kafka", heap="256m")
    database_url = await asyncio.to_thread(postgres.start)
    bootstrap = await asyncio.to_thread(kafka.start)
    settings = ServiceSettings(
        service_name="teams", database_url=database_url, kafka_bootstrap_servers=bootstrap,
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
