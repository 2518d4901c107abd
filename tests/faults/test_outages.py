"""The backing services go away under load and come back: Kafka for 30 s, Postgres crashed.

Issue #9 fault scenarios 4 and 5. The stack has a broker and a database of its own, so this
disturbs no other test.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.faults.invariant import assert_invariant
from tests.faults.stack import Load, Stack
from tests.helpers import eventually

pytestmark = pytest.mark.slow
KAFKA_OUTAGE_SECONDS = 30


async def readiness(stack: Stack, service: str) -> tuple[int, dict[str, bool]]:
    async with httpx.AsyncClient(timeout=10) as http:
        reply = await http.get(f"{stack.url(service)}/readyz")
    return reply.status_code, reply.json()["checks"]


async def test_kafka_down_30_s_under_load_the_api_keeps_accepting_then_all_drains(
    stack: Stack,
) -> None:
    """4. The broker stops for 30 s while a partner posts: every batch is still accepted into
    the outbox (the backlog grows, readiness reports Kafka down), then everything drains."""
    load = Load(stack, seed=4)
    await load.run(batches=2, size=10, concurrency=1)
    await asyncio.to_thread(stack.stop_kafka)
    down_at = time.monotonic()
    try:
        backlog = [await stack.outbox_backlog("activities")]
        async with httpx.AsyncClient() as http:
            while time.monotonic() - down_at < KAFKA_OUTAGE_SECONDS:
                await load.post(http, load.batch(10), deadline=15)
                backlog.append(await stack.outbox_backlog("activities"))
                await asyncio.sleep(0.5)
        status, checks = await readiness(stack, "activities")
        assert status == 503 and checks["kafka"] is False and checks["database"] is True
    finally:
        await asyncio.to_thread(stack.start_kafka)
    outage = time.monotonic() - down_at
    accepted_while_down = len(load.answered) - 20
    assert not load.failures, f"the API failed while Kafka was down: {load.failures[:5]}"
    assert accepted_while_down >= 100, accepted_while_down
    assert backlog[-1] >= accepted_while_down, backlog
    assert backlog == sorted(backlog), "the backlog only grows while the broker is away"

    drain_started = time.monotonic()
    await stack.wait_ready("teams", "activities", "scoring", "notifications", timeout=60)
    summary = await assert_invariant(stack, load=load, drain_timeout=120)
    print(
        f"\n[faults] Kafka down {outage:.0f} s: backlog grew to {backlog[-1]}, drained and "
        f"verified in {time.monotonic() - drain_started:.1f} s; {summary}"
    )


async def test_postgres_crash_under_load_gives_fast_503s_and_pools_recover(
    stack: Stack,
) -> None:
    """5. PostgreSQL stopped in `immediate` mode (a crash) under load, then started again:
    requests fail fast with 503 + Retry-After (no hangs), every pool reconnects, and the
    clients' retries with the same ids leave nothing lost or doubled."""
    load = Load(stack, seed=5)
    stop = asyncio.Event()
    posting = asyncio.create_task(
        load.run(batches=10_000, size=10, concurrency=2, pause=0.1, stop=stop)
    )

    async def some_answered() -> bool:
        return len(load.statuses) >= 40

    await eventually(some_answered, timeout=30, what="load before the crash")
    await asyncio.to_thread(stack.postgres.stop, mode="immediate")
    probe = load.item()
    try:
        async with httpx.AsyncClient(timeout=20) as http:
            for _ in range(4):
                started = time.monotonic()
                reply = await http.post(
                    f"{stack.url('activities')}/v1/activities",
                    json=probe,
                    headers=load.world.partner,
                )
                elapsed = time.monotonic() - started
                assert reply.status_code == 503, reply.text
                assert reply.headers["content-type"] == "application/problem+json"
                assert reply.headers["retry-after"] == "2"
                assert elapsed < 6, f"a request hung {elapsed:.1f} s"
            for service in ("teams", "scoring", "notifications"):
                started = time.monotonic()
                status, checks = await readiness(stack, service)
                assert status == 503 and checks["database"] is False, (service, checks)
                assert time.monotonic() - started < 6
    finally:
        await asyncio.to_thread(stack.start_postgres)
    restarted = time.monotonic()

    async def probe_accepted() -> bool:
        async with httpx.AsyncClient(timeout=10) as http:
            reply = await http.post(
                f"{stack.url('activities')}/v1/activities", json=probe, headers=load.world.partner
            )
        return reply.status_code == 201

    await eventually(probe_accepted, timeout=30, interval=0.5, what="the activities pool")
    recovered = time.monotonic() - restarted
    await asyncio.sleep(2)  # the load runs on against the recovered database
    stop.set()
    await asyncio.wait_for(posting, timeout=60)
    load.statuses[probe["id"]] = ["accepted"]
    load.items[probe["id"]] = probe

    assert "503" in load.failures, "the load never saw the outage"
    assert "ReadTimeout" not in load.failures, "a request hung until the client gave up"
    assert load.slowest < 8, f"slowest request {load.slowest:.1f} s"
    await stack.wait_ready("teams", "activities", "scoring", "notifications")
    summary = await assert_invariant(stack, load=load)
    print(
        f"\n[faults] Postgres crash: {load.failures.count('503')} fast 503s, slowest request "
        f"{load.slowest:.1f} s, API recovered {recovered:.1f} s after restart; {summary}"
    )
