"""Fixtures of the foundation tests: the scratch `plumbing` schema and a raw producer."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from aiokafka import AIOKafkaProducer
from sqlalchemy.ext.asyncio import create_async_engine

from common.kafka import kafka_client_options
from tests.integration.foundation import plumbing


@pytest_asyncio.fixture(scope="module")
async def engine(apply_env: None, infra):  # type: ignore[no-untyped-def]
    engine = create_async_engine(infra.database_url)
    await plumbing.create_schema(engine)
    yield engine
    await engine.dispose()


@pytest_asyncio.fixture(scope="module")
async def producer(infra) -> AsyncIterator[AIOKafkaProducer]:  # type: ignore[no-untyped-def]
    producer = AIOKafkaProducer(
        bootstrap_servers=infra.kafka_bootstrap_servers, acks="all", **kafka_client_options()
    )
    await producer.start()
    yield producer
    await producer.stop()
