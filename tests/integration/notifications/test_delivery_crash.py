"""The worker process killed (SIGKILL) while a slow receiver holds the request, then
restarted: the receiver sees the alert at least once, always with the same idempotency key,
and the delivery log records exactly one success."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from common.contracts.scoring import ScoreComponent
from notifications import bootstrap
from notifications.settings import NotificationsSettings
from tests.helpers import OPERATOR, eventually, running
from tests.integration.notifications.support import Events, Receiver, new_code, score

pytestmark = pytest.mark.slow
REACHED = [ScoreComponent(criterion="reach", points=25, max_points=25, value=1.0, target=1.0)]


@pytest_asyncio.fixture(scope="module")
async def api(apply_env: None) -> AsyncIterator[httpx.AsyncClient]:
    """The API only (no workers in this process): the subprocess does all the work."""
    runtime = bootstrap.build_runtime(NotificationsSettings(CDT_WEBHOOK_ALLOW_PRIVATE=True))
    async with running(runtime, bootstrap.build_app(runtime), workers=False) as client:
        yield client


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "notifications", "worker"],
            env={
                **env,
                "CDT_WEBHOOK_ALLOW_PRIVATE": "true",
                "CDT_WEBHOOK_TIMEOUT_SECONDS": "3",  # lease = 5 s
                "CDT_WEBHOOK_BACKOFF_BASE_SECONDS": "0.2",
                "CDT_WEBHOOK_POLL_SECONDS": "0.1",
            },
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def test_worker_killed_mid_delivery(api, infra, subprocess_env, workdir) -> None:  # type: ignore[no-untyped-def]
    client = api
    province = new_code()
    release = asyncio.Event()

    async def respond(n: int) -> int:
        if n == 1:  # slow: hold the first request until the worker is dead
            await asyncio.wait_for(release.wait(), timeout=60)
        return 200

    events = Events(infra.kafka_bootstrap_servers)
    await events.start()
    log = workdir / "notifications-worker.log"
    worker = start_worker(subprocess_env, log)
    try:
        async with Receiver(respond) as receiver:
            reply = await client.post(
                "/v1/subscriptions",
                json={"url": receiver.url, "scope": province, "alert_types": ["target_reached"]},
                headers=OPERATOR,
            )
            assert reply.status_code == 201
            subscription = reply.json()
            await events.send(score(subject_id=province, version=1, value=50, components=REACHED))

            await asyncio.wait_for(receiver.arrived.wait(), timeout=60)
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait(timeout=10)
            release.set()

            [delivery] = (
                await client.get(
                    "/v1/deliveries",
                    params={"subscription_id": subscription["id"]},
                    headers=OPERATOR,
                )
            ).json()["items"]
            assert delivery["status"] == "pending" and delivery["log"] == []

            worker = start_worker(subprocess_env, log)

            async def succeeded() -> dict[str, Any] | None:
                items = (
                    await client.get(
                        "/v1/deliveries",
                        params={"subscription_id": subscription["id"]},
                        headers=OPERATOR,
                    )
                ).json()["items"]
                return items[0] if items[0]["status"] == "succeeded" else None

            done = await eventually(succeeded, what="delivery after restart", timeout=60)
            assert len(receiver.requests) >= 2
            keys = {r.headers["idempotency-key"] for r in receiver.requests}
            assert keys == {done["id"]}
            assert [a["outcome"] for a in done["log"]].count("success") == 1
            assert done["attempts"] >= 2
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
        await events.stop()
        print(log.read_text()[-3000:] if log.exists() else "")
