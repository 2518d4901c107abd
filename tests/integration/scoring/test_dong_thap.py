"""Acceptance: the letter's Đồng Tháp table, reproduced from activity events.

Official Letter 2251/BTTTT-CĐSQG reports for Đồng Tháp (province code 82): 1,333 installs of the
e-Đồng Tháp app, 986 e-wallet accounts, 210 shops using e-payment, 189 products on e-commerce
platforms and 9,038 citizens guided on online public services. The events are produced to Kafka
as the activities service publishes them; `tests/e2e/test_dong_thap.py` posts them through the
activities API of the whole stack instead.
"""

from __future__ import annotations

import random
import uuid

from tests.helpers import OPERATOR, eventually
from tests.integration.scoring.conftest import produce, wait_processed
from tests.unit.scoring import factory

LETTER = {
    "app_installs": 1333,
    "ewallet_accounts": 986,
    "cashless_merchants": 210,
    "ecommerce_products": 189,
}
GUIDED_ON_PUBLIC_SERVICES = 9038
ACTIVITIES = 400

# A year no other suite posts activities in: they share the topics of this session, and
# the table must be read over exactly the events of this test.
LETTER_YEAR = "2021"
LETTER_YEAR_TIME = factory.NOW.replace(year=2021)


def split(total: int, parts: int, rng: random.Random) -> list[int]:
    """`total` as `parts` non-negative integers (a random composition)."""
    cuts = sorted(rng.randint(0, total) for _ in range(parts - 1))
    return [b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)]


async def test_dong_thap_table_from_events(scoring, producer) -> None:
    client, runtime = scoring
    rng = random.Random(82)
    communes = [f"82-{c:05d}" for c in (28000, 28100, 28200)]
    teams = [
        (uuid.uuid4(), factory.path("82", commune, f"{commune}-V{v}"))
        for commune in communes
        for v in range(4)
    ]
    shares = {name: split(total, ACTIVITIES, rng) for name, total in LETTER.items()}
    guided = split(GUIDED_ON_PUBLIC_SERVICES, ACTIVITIES, rng)
    activities = []
    for i in range(ACTIVITIES):
        team_id, unit = teams[i % len(teams)]
        activities.append(
            factory.activity(
                team_id=team_id,
                unit_path=unit,
                kind=rng.choice(["household_visit", "group_session", "support_desk"]),
                skills=["public_services", "local_platforms"],
                citizens_reached=guided[i],
                household_hash=f"dt-{i}",
                occurred_at=LETTER_YEAR_TIME.replace(month=rng.randint(1, 11)),
                outcomes={name: shares[name][i] for name in LETTER},
            )
        )
    # entries made by mistake and voided: they must leave no trace in the table
    mistakes = [
        factory.activity(
            team_id=teams[0][0],
            unit_path=teams[0][1],
            citizens_reached=50,
            outcomes={"app_installs": 7},
            occurred_at=LETTER_YEAR_TIME,
        )
        for _ in range(5)
    ]
    events = await produce(producer, *activities, *mistakes)
    events += await produce(producer, *[factory.void(m) for m in mistakes])
    await wait_processed(runtime, events, timeout=60)

    reply = await client.get("/v1/indicators/province/82", params={"period": LETTER_YEAR})
    assert reply.status_code == 200, reply.text
    values = reply.json()["indicators"]
    for name, total in LETTER.items():
        assert values[name] == total, name
    assert values["citizens_reached_public_services"] == GUIDED_ON_PUBLIC_SERVICES
    assert values["activities"] == ACTIVITIES

    # against assigned targets (chỉ tiêu giao), each reported figure earns its full points
    for name, total in LETTER.items():
        put = await client.put(
            "/v1/targets",
            json={
                "subject_type": "province",
                "subject_id": "82",
                "period": LETTER_YEAR,
                "indicator": name,
                "value": total,
            },
            headers=OPERATOR,
        )
        assert put.status_code == 200, put.text

    async def scored() -> dict | None:
        body = (await client.get("/v1/scores/province/82", params={"period": LETTER_YEAR})).json()
        parts = {c["criterion"]: c for c in body["components"]}
        done = all(parts[n]["target"] == t for n, t in LETTER.items()) and body["version"] > 0
        return body if done else None

    body = await eventually(scored, what="province 82 scored against its targets")
    parts = {c["criterion"]: c for c in body["components"]}
    for name, total in LETTER.items():
        assert parts[name]["value"] == total
        assert parts[name]["points"] == parts[name]["max_points"]
