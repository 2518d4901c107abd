"""Test helpers shared by integration and e2e tests."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from common.kafka import ensure_topics, kafka_client_options
from common.roles import RoleGrant
from common.runtime import ServiceRuntime
from common.topics import CONSUMER_GROUPS

T = TypeVar("T")
OPERATOR = {"Authorization": "Bearer test-operator-token"}
PERSON_PASSWORD = "correct horse battery staple"


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
        **kafka_client_options(),
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

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka_client_options())
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        return sum(meta.offset for meta in offsets.values() if meta.offset > 0)
    finally:
        await admin.close()


async def start_groups_at_topic_ends(bootstrap_servers: str, *, timeout: float = 60.0) -> None:
    """Commit every service group's offsets at the current end of the topics it reads.

    For a stack that starts after others on the suite's shared broker: what earlier packages
    produced (tens of thousands of score updates, faster as the services get faster) is not
    its business, and wading through it with a small consumer batch took minutes. The groups
    must be empty: commits from outside a group are refused while members remain, so this
    retries until the previous stack's members have left or timed out.
    """
    await ensure_topics(bootstrap_servers)
    deadline = time.monotonic() + timeout
    for group, topics in CONSUMER_GROUPS.items():
        partitions = [TopicPartition(t.name, p) for t in topics for p in range(t.partitions)]
        while True:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=bootstrap_servers,
                group_id=group,
                enable_auto_commit=False,
                **kafka_client_options(),
            )
            await consumer.start()
            try:
                consumer.assign(partitions)  # no group membership: a plain offset commit
                await consumer.commit(await consumer.end_offsets(partitions))
                break
            except KafkaError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(1)
            finally:
                await consumer.stop()


async def recompute_job(http: Any, *, base_url: str = "", timeout: float = 120.0) -> dict[str, Any]:
    """`POST /v1/recompute` (202 and a job), then the job polled until it ends; its last view."""
    started = await http.post(f"{base_url}/v1/recompute", headers=OPERATOR)
    assert started.status_code == 202, started.text
    job = started.json()
    assert started.headers["location"] == f"/v1/recompute/{job['id']}"

    async def ended() -> dict[str, Any] | None:
        reply = await http.get(f"{base_url}/v1/recompute/{job['id']}", headers=OPERATOR)
        assert reply.status_code == 200, reply.text
        view: dict[str, Any] = reply.json()
        return view if view["state"] in ("succeeded", "failed") else None

    return await eventually(ended, timeout=timeout, interval=0.2, what="the recompute job")


async def person_login(teams: httpx.AsyncClient, *grants: RoleGrant) -> dict[str, str]:
    """The bearer header of a new account of the local issuer holding `grants`, its invitation
    redeemed with `PERSON_PASSWORD`."""
    username = f"p{uuid.uuid4().hex[:12]}"
    created = await teams.post(
        "/v1/accounts",
        json={
            "username": username,
            "display_name": "Cán bộ thử",
            "roles": [{"role": grant.role, "unit": grant.unit} for grant in grants],
        },
        headers=OPERATOR,
    )
    assert created.status_code == 201, created.text
    redeemed = await teams.post(
        "/v1/invitations:redeem",
        json={"code": created.json()["invitation_code"], "password": PERSON_PASSWORD},
    )
    assert redeemed.status_code == 200, redeemed.text
    token = await teams.post(
        "/v1/auth/token", json={"username": username, "password": PERSON_PASSWORD}
    )
    assert token.status_code == 200, token.text
    return {"Authorization": f"Bearer {token.json()['access_token']}"}
