"""One scoring service (consumer + publisher + API) and a Kafka producer for the package."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest_asyncio
from aiokafka import AIOKafkaProducer
from sqlalchemy import select

from common.envelope import EventContract, OutboundEvent, kafka_headers
from common.kafka import kafka_client_options
from common.runtime import ServiceRuntime
from scoring import adapters
from scoring import bootstrap as scoring_bootstrap
from scoring.domain import SubjectPeriod
from scoring.settings import ScoringSettings
from tests.helpers import eventually, running


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def scoring(apply_env: None) -> AsyncIterator[tuple[httpx.AsyncClient, ServiceRuntime]]:
    runtime = scoring_bootstrap.build_runtime(ScoringSettings())
    async with running(runtime, scoring_bootstrap.build_app(runtime)) as client:
        yield client, runtime


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def producer(infra: Any) -> AsyncIterator[AIOKafkaProducer]:
    kafka = AIOKafkaProducer(
        bootstrap_servers=infra.kafka_bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        **kafka_client_options(),
    )
    await kafka.start()
    yield kafka
    await kafka.stop()


def outbound(contract: EventContract) -> OutboundEvent:
    source = "/cdt/activities" if contract.TOPIC.name.startswith("activities") else "/cdt/teams"
    return OutboundEvent.of(contract, source=source)


async def send(producer: AIOKafkaProducer, events: Sequence[OutboundEvent]) -> None:
    """Publish like a relay would: CloudEvents headers, key = event key, JSON value."""
    for event in events:
        await producer.send(
            event.topic,
            key=event.key.encode(),
            value=json.dumps(event.data, ensure_ascii=False).encode(),
            headers=kafka_headers(event.ce_headers()),
        )
    await producer.flush()


async def produce(producer: AIOKafkaProducer, *contracts: EventContract) -> list[OutboundEvent]:
    events = [outbound(c) for c in contracts]
    await send(producer, events)
    return events


async def indicators(
    runtime: ServiceRuntime, subject_type: str, subject_id: str, period: str
) -> dict[str, float]:
    key = SubjectPeriod(subject_type, subject_id, period)
    async with runtime.sessions() as session:
        found = await adapters.indicators_for(session, [key])
    return found[key]


async def wait_indicator(
    runtime: ServiceRuntime,
    key: tuple[str, str, str],
    name: str,
    expected: float,
    *,
    timeout: float = 20.0,
) -> dict[str, float]:
    async def check() -> dict[str, float] | None:
        values = await indicators(runtime, *key)
        return values if values.get(name, 0) == expected else None

    return await eventually(check, timeout=timeout, what=f"{key} {name} == {expected}")


async def wait_processed(
    runtime: ServiceRuntime, events: Sequence[OutboundEvent], *, timeout: float = 30.0
) -> None:
    """Until the scoring consumer has committed every one of these events."""
    table = runtime.tables.processed_events
    wanted = {e.id for e in events}

    async def check() -> bool:
        async with runtime.sessions() as session:
            done = await session.scalars(
                select(table.c.event_id).where(
                    table.c.consumer_group.in_(scoring_bootstrap.GROUPS),
                    table.c.event_id.in_(wanted),
                )
            )
            return set(done) == wanted

    await eventually(check, timeout=timeout, what=f"{len(wanted)} events processed")
