"""Acceptance (#5): the letter's Đồng Tháp table, from activities posted through the public API.

Official Letter 2251/BTTTT-CĐSQG reports for Đồng Tháp (province code 82): 1,333 installs of the
e-Đồng Tháp app, 986 e-wallet accounts, 210 shops using e-payment, 189 products on e-commerce
platforms and 9,038 citizens guided on online public services. Here a partner app posts the
matching activities (and a few mistaken ones it then voids) to the activities service of the
whole stack (`make run`); the province's indicators in scoring must read exactly the table.
"""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

import httpx

from tests.e2e.test_make_run import Stack
from tests.e2e.test_trace import BASE, wait

LETTER = {
    "app_installs": 1333,
    "ewallet_accounts": 986,
    "cashless_merchants": 210,
    "ecommerce_products": 189,
}
GUIDED_ON_PUBLIC_SERVICES = 9038
ACTIVITIES = 400
YEAR = "2025"


def split(total: int, parts: int, rng: random.Random) -> list[int]:
    """`total` as `parts` non-negative integers (a random composition)."""
    cuts = sorted(rng.randint(0, total) for _ in range(parts - 1))
    return [b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)]


class Api:
    def __init__(self, token: str) -> None:
        self.http = httpx.Client(timeout=60)
        self.operator = {"Authorization": f"Bearer {token}"}

    def call(self, method: str, url: str, *codes: int, **kwargs: Any) -> Any:
        kwargs.setdefault("headers", self.operator)
        reply = self.http.request(method, url, **kwargs)
        assert reply.status_code in (codes or (200, 201)), reply.text
        return reply.json()


def roster(api: Api, rng: random.Random) -> list[tuple[str, str]]:
    """Twelve teams in three of Đồng Tháp's communes, one member each: (team id, member id)."""
    api.call("POST", f"{BASE['teams']}/v1/admin-units:import", json={"source": "vietnam-provinces"})
    communes = api.call(
        "GET", f"{BASE['teams']}/v1/admin-units", params={"parent": "82", "limit": 3}
    )["items"]
    assert len(communes) == 3, communes
    pairs = []
    for index in range(12):
        team = api.call(
            "POST",
            f"{BASE['teams']}/v1/teams",
            json={
                "code": f"DT-{index:02d}",
                "name": f"Tổ CNSCĐ số {index}",
                "unit_code": communes[index % 3]["code"],
                "established_on": "2023-06-15",
            },
        )
        member = api.call(
            "POST",
            f"{BASE['teams']}/v1/teams/{team['id']}/members",
            json={
                "full_name": f"Thành viên {index}",
                "role": "leader",
                "affiliation": "youth_union",
                "phone": f"09{rng.randrange(10**8):08d}",
                "joined_on": "2023-06-15",
            },
        )
        pairs.append((team["id"], member["id"]))
    return pairs


def activity(team: tuple[str, str], rng: random.Random, **fields: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "team_id": team[0],
        "member_id": team[1],
        "occurred_at": f"{YEAR}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T09:00:00+07:00",
        "kind": rng.choice(["household_visit", "group_session", "support_desk"]),
        "skills": ["public_services", "local_platforms"],
        **fields,
    }


def post_all(api: Api, key: str, items: list[dict[str, Any]]) -> None:
    """One batch; items the replica cannot validate yet (retryable) are posted again."""
    partner = {"Authorization": f"Bearer {key}"}
    pending = items
    for _ in range(60):
        results = api.call(
            "POST",
            f"{BASE['activities']}/v1/activities:batch",
            json={"items": pending},
            headers=partner,
        )["items"]
        retry = []
        for item, result in zip(pending, results, strict=True):
            if result["status"] == "rejected":
                assert result.get("retryable"), result
                retry.append(item)
        if not retry:
            return
        pending = retry
        time.sleep(0.5)
    raise AssertionError(f"{len(pending)} items still not accepted")


def test_dong_thap_table_through_the_activities_api(workdir, subprocess_env) -> None:  # type: ignore[no-untyped-def]
    env = {
        k: v
        for k, v in subprocess_env.items()
        if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "CDT_ADMIN_TOKEN", "CDT_TRACE_FILE")
    }
    env["CDT_TRACES_EXPORTER"] = "none"
    data_dir = workdir / "dong-thap-stack"
    stack = Stack(data_dir, env)
    try:
        stack.wait_for("all four services ready", timeout=240)
        api = Api((data_dir / "admin-token").read_text().strip())
        rng = random.Random(82)
        teams = roster(api, rng)
        key = api.call(
            "POST",
            f"{BASE['activities']}/v1/partners",
            json={"name": "e-Đồng Tháp", "provinces": ["82"]},
        )["api_key"]
        shares = {name: split(total, ACTIVITIES, rng) for name, total in LETTER.items()}
        guided = split(GUIDED_ON_PUBLIC_SERVICES, ACTIVITIES, rng)
        items = [
            activity(
                teams[i % len(teams)],
                rng,
                citizens_reached=guided[i],
                # a household visit reaches at most 50 people: larger ones were group sessions
                **({"kind": "group_session"} if guided[i] > 50 else {}),
                household_ref=f"dt-household-{i}",
                outcomes={name: shares[name][i] for name in LETTER},
            )
            for i in range(ACTIVITIES)
        ]
        mistakes = [
            activity(teams[0], rng, citizens_reached=50, outcomes={"app_installs": 7})
            for _ in range(5)
        ]
        post_all(api, key, items + mistakes)
        post_all(api, key, items[:40])  # a partner retrying part of the batch: duplicates
        for mistake in mistakes:
            api.call(
                "POST",
                f"{BASE['activities']}/v1/activities/{mistake['id']}:void",
                json={"reason": "entered twice by mistake"},
                headers={"Authorization": f"Bearer {key}"},
            )

        def table() -> dict[str, float] | None:
            reply = api.http.get(
                f"{BASE['scoring']}/v1/indicators/province/82", params={"period": YEAR}
            )
            if reply.status_code != 200:
                return None
            values: dict[str, float] = reply.json()["indicators"]
            settled = (
                values.get("activities") == ACTIVITIES
                and values.get("app_installs") == (LETTER["app_installs"])
            )
            return values if settled else None

        values = wait(table, 90, "scoring to reflect the posted and voided activities")
    finally:
        stack.stop()

    for name, total in LETTER.items():
        assert values[name] == total, name
    assert values["citizens_reached_public_services"] == GUIDED_ON_PUBLIC_SERVICES
    assert values["households_visited"] == ACTIVITIES
    assert values["active_teams"] == len(teams)
