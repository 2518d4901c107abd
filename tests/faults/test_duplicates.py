"""10 % duplicate submissions and out-of-order delivery leave every count unchanged.

Issue #9 fault scenario 8. Duplicates at both ends: partners re-post 10 % of their events (same
id and payload, in later batches and within one batch) in an order unrelated to event time;
Kafka delivers 10 % of the activity events again (same CloudEvent id, newest first), some under
a new CloudEvent id (a re-publication), and a void before the activity it voids.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections import Counter

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from common.envelope import kafka_headers
from common.kafka import kafka_client_options
from common.topics import ACTIVITY_RECORDED, ACTIVITY_VOIDED
from tests.faults.invariant import (
    accepted_activities,
    assert_invariant,
    expected_indicators,
    served_indicators,
)
from tests.faults.stack import Load, Stack
from tests.helpers import eventually

pytestmark = pytest.mark.slow


async def void(stack: Stack, load: Load, activity_id: str) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        reply = await http.post(
            f"{stack.url('activities')}/v1/activities/{activity_id}:void",
            json={"reason": "entered twice by mistake"},
            headers=load.world.partner,
        )
    assert reply.status_code == 200, reply.text


async def redeliver(stack: Stack, rows: list[dict[str, object]], *, new_ids: bool = False) -> None:
    """Publish outbox rows again as the relay would (or as a re-publication under new ids)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=stack.bootstrap, acks="all", **kafka_client_options()
    )
    await producer.start()
    try:
        for row in rows:
            headers = dict(row["headers"])  # type: ignore[call-overload]
            if new_ids:
                headers["ce_id"] = str(uuid.uuid4())
            await producer.send_and_wait(
                str(row["topic"]),
                key=str(row["aggregateid"]).encode(),
                value=json.dumps(row["payload"], ensure_ascii=False).encode(),
                headers=kafka_headers(headers),
            )
    finally:
        await producer.stop()


async def outbox_rows(stack: Stack, activity_ids: list[str]) -> list[dict[str, object]]:
    rows = await stack.rows(
        "SELECT seq, id::text AS id, topic, aggregateid, payload, headers FROM activities.outbox "
        "WHERE payload->>'id' = ANY(:ids) ORDER BY seq",
        ids=activity_ids,
    )
    return [dict(r) for r in rows]


async def test_duplicate_submissions_and_out_of_order_delivery_change_no_count(
    stack: Stack,
) -> None:
    rng = random.Random(8)
    load = Load(stack, seed=88)
    originals = load.batch(150)
    rng.shuffle(originals)  # posted in no particular time order
    # 10 %: 10 re-sent in a later batch, 5 twice within their own batch.
    later = rng.sample(originals[:100], 10)
    same = rng.sample(originals[125:], 5)
    batches = [originals[i : i + 25] for i in range(0, 150, 25)]
    batches[-1] = batches[-1] + same
    batches[-2] = batches[-2] + later[:5]
    batches[-1] = batches[-1] + later[5:]
    async with httpx.AsyncClient() as http:
        for batch in batches:
            await load.post(http, batch)
    answers = [s for statuses in load.statuses.values() for s in statuses]
    assert answers.count("accepted") == 150, Counter(answers)
    assert answers.count("duplicate") == 15

    voided = rng.sample([item["id"] for item in originals], 6)
    for activity_id in voided:
        await void(stack, load, activity_id)
    first = await assert_invariant(stack, load=load)
    keys = sorted(expected_indicators(await accepted_activities(stack)))
    counts = await served_indicators(stack, keys)

    # Kafka-side duplicates: 15 recorded events and every void again, newest first, then
    # 8 recorded events re-published under new CloudEvent ids.
    rows = await outbox_rows(stack, [item["id"] for item in originals])
    recorded = [r for r in rows if r["topic"] == ACTIVITY_RECORDED.name]
    voids = [r for r in rows if r["topic"] == ACTIVITY_VOIDED.name]
    assert len(recorded) == 150 and len(voids) == 6
    again = sorted(rng.sample(recorded, 15) + voids, key=lambda r: -int(r["seq"]))  # type: ignore[call-overload]
    await redeliver(stack, again)
    await redeliver(stack, rng.sample(recorded, 8), new_ids=True)

    # A void delivered before its activity: the relay is held back while the partner posts and
    # voids; the void reaches Kafka first, then the relay publishes both.
    worker = stack["activities-worker"]
    assert await asyncio.to_thread(worker.terminate) == 0
    late = load.item()
    async with httpx.AsyncClient() as http:
        await load.post(http, [late])
    await void(stack, load, late["id"])
    late_rows = await outbox_rows(stack, [late["id"]])
    [void_first] = [r for r in late_rows if r["topic"] == ACTIVITY_VOIDED.name]
    await redeliver(stack, [void_first])

    async def void_applied() -> bool:
        return bool(
            await stack.scalar(
                "SELECT count(*) FROM scoring.processed_events "
                "WHERE consumer_group = 'scoring' AND event_id::text = :id",
                id=void_first["id"],
            )
        )

    await eventually(void_applied, timeout=30, what="scoring to apply the early void")
    worker.start()

    second = await assert_invariant(stack, load=load)
    assert second.accepted == first.accepted + 1 and second.live == first.live
    assert await served_indicators(stack, keys) == counts, "a duplicate changed a count"
    print(f"\n[faults] duplicates and out-of-order delivery: counts unchanged; {second}")
