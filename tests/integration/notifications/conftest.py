"""What the notifications test modules share: a producer of the other services' events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio

from tests.integration.notifications.support import Events


@pytest_asyncio.fixture(scope="module")
async def events(infra: Any) -> AsyncIterator[Events]:
    producer = Events(infra.kafka_bootstrap_servers)
    await producer.start()
    yield producer
    await producer.stop()
