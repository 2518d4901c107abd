"""Webhook delivery against a real local HTTP receiver: signed, idempotent, retried with
backoff, dead after the limit and redeliverable; subscriptions and their URL checks."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio

from common.contracts.scoring import ScoreComponent
from notifications import bootstrap
from notifications.domain import verify_signature
from notifications.settings import NotificationsSettings
from tests.helpers import OPERATOR, eventually, running
from tests.integration.notifications.support import Receiver, answer, new_code, score

REACHED = [ScoreComponent(criterion="reach", points=25, max_points=25, value=1.2, target=1.0)]
MAX_ATTEMPTS = 3


@pytest_asyncio.fixture(scope="module")
async def service(apply_env: None) -> AsyncIterator[httpx.AsyncClient]:
    settings = NotificationsSettings(
        CDT_WEBHOOK_ALLOW_PRIVATE=True,
        CDT_WEBHOOK_MAX_ATTEMPTS=MAX_ATTEMPTS,
        CDT_WEBHOOK_BACKOFF_BASE_SECONDS=0.2,
        CDT_WEBHOOK_BACKOFF_MAX_SECONDS=1.0,
        CDT_WEBHOOK_TIMEOUT_SECONDS=2,
        CDT_WEBHOOK_POLL_SECONDS=0.05,
    )
    runtime = bootstrap.build_runtime(settings)
    async with running(runtime, bootstrap.build_app(runtime)) as client:
        yield client


async def subscribe(client: httpx.AsyncClient, url: str, scope: str, *types: str) -> dict[str, Any]:
    reply = await client.post(
        "/v1/subscriptions",
        json={"url": url, "scope": scope, "alert_types": list(types or ["target_reached"])},
        headers=OPERATOR,
    )
    assert reply.status_code == 201, reply.text
    return reply.json()


async def deliveries(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    reply = await client.get("/v1/deliveries", params=params, headers=OPERATOR)
    assert reply.status_code == 200, reply.text
    return reply.json()["items"]


async def test_receiver_failing_twice_then_succeeding_gets_a_signed_alert(service, events) -> None:  # type: ignore[no-untyped-def]
    client = service
    province = new_code()
    async with Receiver(answer(500, 503)) as receiver, Receiver(answer()) as bystander:
        sub = await subscribe(client, receiver.url, province, "target_reached")
        elsewhere = await subscribe(client, bystander.url, new_code(), "target_reached")
        other_type = await subscribe(client, bystander.url, province, "score_drop")
        await events.send(score(subject_id=province, version=1, value=90, components=REACHED))

        async def delivered() -> list[dict[str, Any]]:
            found = await deliveries(client, subscription_id=sub["id"])
            return found if found and found[0]["status"] == "succeeded" else []

        [delivery] = await eventually(delivered, what="delivery succeeded", timeout=30)
        assert [a["outcome"] for a in delivery["log"]] == ["http_error", "http_error", "success"]
        assert [a["status_code"] for a in delivery["log"]] == [500, 503, 200]
        assert len(receiver.requests) == 3
        for request in receiver.requests:
            assert request.headers["idempotency-key"] == delivery["id"]
            assert verify_signature(
                secret=sub["secret"],
                header=request.headers["x-cdt-signature"],
                body=request.body,
                now=int(time.time()),
            )
            assert not verify_signature(
                secret="whsec_wrong",
                header=request.headers["x-cdt-signature"],
                body=request.body,
                now=int(time.time()),
            )
        assert len({r.body for r in receiver.requests}) == 1  # the same bytes every time
        body = json.loads(receiver.requests[-1].body)
        assert body["id"] == delivery["id"]
        assert body["data"]["alert_type"] == "target_reached"
        assert body["data"]["subject_id"] == province
        assert body["data"]["id"] == delivery["alert_id"]
        # exponential backoff with jitter: each wait at least half its ceiling (0.2 s, 0.4 s)
        gaps = [b.at - a.at for a, b in zip(receiver.requests, receiver.requests[1:], strict=False)]
        assert gaps[0] >= 0.1 and gaps[1] >= 0.2
        assert await deliveries(client, subscription_id=elsewhere["id"]) == []
        assert await deliveries(client, subscription_id=other_type["id"]) == []
        assert bystander.requests == []

    metrics = (await client.get("/metrics")).text
    assert 'cdt_webhook_deliveries_total{outcome="success"}' in metrics
    assert 'cdt_alerts_raised_total{alert_type="target_reached"}' in metrics


async def test_never_succeeding_receiver_ends_dead_and_can_be_redelivered(service, events) -> None:  # type: ignore[no-untyped-def]
    client = service
    province = new_code()
    healthy = False

    async def respond(_: int) -> int:
        return 200 if healthy else 500

    async with Receiver(respond) as receiver:
        sub = await subscribe(client, receiver.url, province, "target_reached")
        await events.send(score(subject_id=province, version=1, value=90, components=REACHED))

        async def dead() -> list[dict[str, Any]]:
            return await deliveries(client, subscription_id=sub["id"], status="dead")

        [delivery] = await eventually(dead, what="delivery dead", timeout=30)
        assert delivery["attempts"] == MAX_ATTEMPTS
        assert [a["outcome"] for a in delivery["log"]] == ["http_error"] * MAX_ATTEMPTS
        assert len(receiver.requests) == MAX_ATTEMPTS
        await_more = len(receiver.requests)
        time_after = time.monotonic()
        healthy = True

        redone = await client.post(f"/v1/deliveries/{delivery['id']}:redeliver", headers=OPERATOR)
        assert redone.status_code == 202, redone.text
        assert redone.json()["status"] == "pending"

        async def succeeded() -> list[dict[str, Any]]:
            return await deliveries(client, subscription_id=sub["id"], status="succeeded")

        [done] = await eventually(succeeded, what="redelivery succeeded", timeout=15)
        assert [a["outcome"] for a in done["log"]][-1] == "success"
        assert len(receiver.requests) == await_more + 1
        assert receiver.requests[-1].at >= time_after
        assert {r.headers["idempotency-key"] for r in receiver.requests} == {delivery["id"]}

    assert (
        await client.post(f"/v1/deliveries/{uuid.uuid4()}:redeliver", headers=OPERATOR)
    ).status_code == 404
    metrics = (await client.get("/metrics")).text
    assert 'cdt_webhook_deliveries_total{outcome="dead"}' in metrics


async def test_subscriptions_api(service) -> None:  # type: ignore[no-untyped-def]
    client = service
    created = await subscribe(client, "https://hooks.example.org/cdt", "82", "team_inactive")
    assert created["secret"].startswith("whsec_") and len(created["secret"]) > 30
    listed = (await client.get("/v1/subscriptions", params={"limit": 500}, headers=OPERATOR)).json()
    mine = [s for s in listed["items"] if s["id"] == created["id"]]
    assert mine and "secret" not in mine[0]
    assert (await client.get("/v1/subscriptions")).status_code == 401
    bad = await client.post(
        "/v1/subscriptions",
        json={"url": "https://x.example.org", "scope": "82", "alert_types": ["nope"]},
        headers=OPERATOR,
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"].startswith(
        "body.alert_types"
    )
    gone = await client.delete(f"/v1/subscriptions/{created['id']}", headers=OPERATOR)
    assert gone.status_code == 204
    again = await client.delete(f"/v1/subscriptions/{created['id']}", headers=OPERATOR)
    assert again.status_code == 404


async def test_private_webhook_targets_refused_unless_allowed(apply_env: None) -> None:
    runtime = bootstrap.build_runtime(NotificationsSettings(CDT_WEBHOOK_ALLOW_PRIVATE=False))
    async with running(runtime, bootstrap.build_app(runtime), workers=False) as client:
        for url in (
            "http://127.0.0.1:9/hook",
            "http://localhost/hook",
            "http://10.1.2.3/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/hook",
            "http://[::ffff:192.168.1.1]/hook",
            "https://user:pw@hooks.example.org/",
            "ftp://hooks.example.org/",
        ):
            reply = await client.post(
                "/v1/subscriptions",
                json={"url": url, "scope": "82", "alert_types": ["score_drop"]},
                headers=OPERATOR,
            )
            assert reply.status_code == 422, url
            assert reply.json()["errors"][0]["field"] == "body.url"
            assert "pw" not in reply.text
        listed = (
            await client.get("/v1/subscriptions", params={"limit": 500}, headers=OPERATOR)
        ).json()
        assert not any("127.0.0.1:9" in s["url"] for s in listed["items"])
