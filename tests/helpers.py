"""Test helpers shared by integration and e2e tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx
from aiokafka import AIOKafkaConsumer

from common.runtime import ServiceRuntime

T = TypeVar("T")
OPERATOR = {"Authorization": "Bearer test-operator-token"}


async def eventually(
    check: Callable[[], Awaitable[T]],
    *,
    timeout: float = 20.0,
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


@asynccontextmanager
async def running(runtime: ServiceRuntime, app: Any, *, workers: bool = True):  # type: ignore[no-untyped-def]
    """A service started in-process, with an HTTP client on its ASGI app."""
    await runtime.start(workers=workers)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client
    finally:
        await runtime.stop()


async def read_topic(
    bootstrap: str,
    topic: str,
    *,
    until: Callable[[list[Any]], bool],
    timeout: float = 20.0,
) -> list[Any]:
    """Read a topic from the beginning (no group) until `until(records)` holds."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while not until(records):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out reading {topic}: {len(records)} records")
            batch = await consumer.getmany(timeout_ms=300)
            for part in batch.values():
                records.extend(part)
        return records
    finally:
        await consumer.stop()


def headers_of(record: Any) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers}


async def committed_offsets(bootstrap: str, group: str) -> int:
    """Sum of the offsets a consumer group has committed, over all its partitions."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        return sum(meta.offset for meta in offsets.values() if meta.offset > 0)
    finally:
        await admin.close()
