"""Notifications killed mid-delivery: every alert is delivered, and recorded as delivered, once.

Issue #9 fault scenario 9, through the whole pipeline: activities reach a target in scoring,
notifications raises the alerts and POSTs them to a slow webhook receiver; the process is killed
(SIGKILL) while requests are in flight, then restarted.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.faults.invariant import assert_invariant
from tests.faults.stack import PROVINCE, Load, Stack
from tests.helpers import OPERATOR, eventually
from tests.integration.notifications.support import Receiver

pytestmark = pytest.mark.slow


def when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


async def test_notifications_killed_mid_delivery_records_one_success_per_alert(
    stack: Stack,
) -> None:
    release = asyncio.Event()

    async def respond(_: int) -> int:
        # Requests that arrive before the kill hang until the process is dead; later ones pass.
        if not release.is_set():
            await asyncio.wait_for(release.wait(), timeout=60)
        return 200

    notifications = stack["notifications"]
    async with (
        Receiver(respond) as receiver,
        httpx.AsyncClient(base_url=stack.url("notifications"), headers=OPERATOR) as http,
    ):
        rule = await http.put(
            "/v1/rules",
            json={
                "scope": "national",
                "alert_type": "target_reached",
                # No criterion (none is named so): only this indicator target raises alerts.
                "params": {"criteria": ["-"], "indicator_targets": {"ecommerce_products": 1}},
            },
        )
        assert rule.status_code == 200, rule.text
        created = await http.post(
            "/v1/subscriptions",
            json={"url": receiver.url, "scope": PROVINCE, "alert_types": ["target_reached"]},
        )
        assert created.status_code == 201, created.text
        subscription = created.json()["id"]
        try:
            load = Load(stack, seed=9)
            first, second = load.world.teams[0], load.world.teams[-1]  # one in each commune
            items = [
                load.item(
                    team_id=team.id, member_id=team.members[0], outcomes={"ecommerce_products": 1}
                )
                for team in (first, second)
            ]
            async with httpx.AsyncClient() as partner:
                await load.post(partner, items)

            async def in_flight() -> bool:
                return len(receiver.requests) >= 3

            await eventually(in_flight, timeout=60, what="webhook requests in flight")
            notifications.kill()
            release.set()
            held = {r.headers["idempotency-key"] for r in receiver.requests}
            notifications.start()
            await stack.wait_ready("notifications")
            summary = await assert_invariant(stack, load=load)  # alerts raised: lag 0

            async def deliveries() -> list[dict[str, Any]] | None:
                reply = await http.get(
                    "/v1/deliveries", params={"subscription_id": subscription, "limit": 200}
                )
                assert reply.status_code == 200, reply.text
                items = reply.json()["items"]
                done = all(d["status"] == "succeeded" for d in items)
                return items if items and done else None

            delivered = await eventually(deliveries, timeout=60, what="every delivery succeeded")
            alerts = [
                alert
                for alert in (
                    await http.get(
                        "/v1/alerts",
                        params={"unit": PROVINCE, "type": "target_reached", "limit": 500},
                    )
                ).json()["items"]
                # The rule is on by default (all criteria): earlier tests raised alerts too.
                if when(alert["raised_at"]) > when(created.json()["created_at"])
            ]
        finally:
            await http.delete(f"/v1/subscriptions/{subscription}")

    # One delivery per alert in the subscription's scope, each recorded as one success.
    # Two teams in two communes reach the target: 3 periods x (2 teams, 2 communes, province).
    assert len(alerts) >= 15, alerts
    by_alert = Counter(d["alert_id"] for d in delivered)
    assert set(by_alert) == {a["id"] for a in alerts}, (
        [a for a in alerts if a["id"] not in by_alert],
        [d for d in delivered if d["alert_id"] not in {a["id"] for a in alerts}],
    )
    assert set(by_alert.values()) == {1}, by_alert
    for delivery in delivered:
        outcomes = [attempt["outcome"] for attempt in delivery["log"]]
        assert outcomes.count("success") == 1, delivery
    # The receiver saw every delivery, always under its own idempotency key; those in flight
    # at the kill arrived twice and count once by that key.
    keys = [r.headers["idempotency-key"] for r in receiver.requests]
    assert set(keys) == {d["id"] for d in delivered}
    assert held <= set(keys) and len(held) >= 3
    repeated = {k for k in keys if keys.count(k) > 1}
    assert held <= repeated, "a delivery in flight at the kill was never retried"
    print(
        f"\n[faults] notifications kill: {len(alerts)} alerts, {len(keys)} webhook requests, "
        f"{len(repeated)} repeated, one success each; {summary}"
    )
