from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from aiokafka import AIOKafkaProducer

from activities import bootstrap
from activities.settings import ActivitiesSettings
from common.kafka import kafka_client_options
from tests.helpers import running
from tests.integration.activities.support import HMAC_KEY, Env


@pytest_asyncio.fixture(scope="package")
async def env(apply_env: None, infra) -> AsyncIterator[Env]:  # type: ignore[no-untyped-def]
    settings = ActivitiesSettings(CDT_HOUSEHOLD_HMAC_KEY=HMAC_KEY)  # type: ignore[call-arg]
    runtime = bootstrap.build_runtime(settings)
    producer = AIOKafkaProducer(
        bootstrap_servers=infra.kafka_bootstrap_servers, acks="all", **kafka_client_options()
    )
    await producer.start()
    try:
        async with running(runtime, bootstrap.build_app(runtime)) as client:
            yield Env(client, runtime, producer, infra.kafka_bootstrap_servers)
    finally:
        await producer.stop()
