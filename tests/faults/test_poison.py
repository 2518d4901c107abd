"""Poison records go to the dead-letter topics and the consumers carry on; after a fix, the
operator's command inspects and replays them, and the replayed event counts once.

Issue #9 fault scenario 7, on every consumed topic of every consumer group: scoring,
notifications, activities (teams replica) and teams (partner replica).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections import Counter
from datetime import UTC, datetime

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from common import asyncapi
from common.deadletters import dead_letter_topics, list_letters
from common.kafka import kafka_client_options
from common.topics import ACTIVITY_RECORDED, CONSUMER_GROUPS, TEAMS_ADMIN_UNIT
from tests.faults.invariant import assert_invariant, scoring_facts
from tests.faults.stack import Load, Stack
from tests.helpers import eventually

pytestmark = pytest.mark.slow
RECORDED = ACTIVITY_RECORDED.name
CONTRACTS = asyncapi.CONTRACTS  # every event type on a topic
# Event types a group reads a topic for but does not handle are skipped, not dead-lettered:
# the activities replica has no use for admin units (their path travels on the team).
IGNORED = {("activities", TEAMS_ADMIN_UNIT.name)}

POISON_TRIGGER = [
    "CREATE TABLE IF NOT EXISTS public.fault_poison (activity_id text PRIMARY KEY)",
    """
    CREATE OR REPLACE FUNCTION public.fault_poison_check() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
      IF EXISTS (SELECT 1 FROM activities.outbox o
                 JOIN public.fault_poison f ON f.activity_id = o.payload->>'id'
                 WHERE o.id = NEW.event_id) THEN
        RAISE EXCEPTION 'fault injection: a bug rejects event %', NEW.event_id;
      END IF;
      RETURN NEW;
    END $$
    """,
    "DROP TRIGGER IF EXISTS fault_poison ON scoring.processed_events",
    """
    CREATE TRIGGER fault_poison BEFORE INSERT ON scoring.processed_events
    FOR EACH ROW WHEN (NEW.consumer_group = 'scoring')
    EXECUTE FUNCTION public.fault_poison_check()
    """,
]


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "common.deadletters", *args],
        env=stack.env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )


async def dead_letters(stack: Stack) -> dict[tuple[str, str], list[str]]:
    """(group, original topic) -> the reasons of its dead letters, over every group."""
    topics = [t for group in CONSUMER_GROUPS for t in dead_letter_topics(group, None)]
    found: dict[tuple[str, str], list[str]] = {}
    for letter in await list_letters(stack.bootstrap, topics):
        group = letter.topic.rsplit(".dlt.", 1)[1]
        found.setdefault((group, letter.original.split("@")[0]), []).append(letter.reason)
    return found


async def test_a_failing_event_is_dead_lettered_then_replayed_once_after_the_fix(
    stack: Stack,
) -> None:
    """A valid event that scoring cannot apply (a simulated bug: a trigger rejects it) is retried
    in place, dead-lettered, and the rest of its batch is applied; `common.deadletters list`
    shows it, and after the fix `replay` brings it in exactly once."""
    for statement in POISON_TRIGGER:
        await stack.execute(statement)
    load = Load(stack, seed=7)
    batch = load.batch(10)
    poisoned = batch[4]["id"]
    await stack.execute("INSERT INTO public.fault_poison VALUES (:id)", id=poisoned)
    try:
        await load_post(load, batch)

        async def dead_lettered() -> bool:
            return bool((await dead_letters(stack)).get(("scoring", RECORDED)))

        await eventually(dead_lettered, timeout=60, what="the dead letter")
        await stack.wait_drained()
        facts = await scoring_facts(stack)
        assert poisoned not in facts, "the failing event was not applied"
        assert all(item["id"] in facts for item in batch if item["id"] != poisoned)
        event_id = await stack.scalar(
            "SELECT id::text FROM activities.outbox WHERE payload->>'id' = :id AND topic = :t",
            id=poisoned,
            t=RECORDED,
        )
        listed = await asyncio.to_thread(cli, stack, "list", "scoring", RECORDED)
        assert f"event={event_id}" in listed.stdout, listed.stdout
        assert "fault injection: a bug rejects event" in listed.stdout
        assert "1 dead letters" in listed.stderr
    finally:
        await stack.execute("DROP TRIGGER IF EXISTS fault_poison ON scoring.processed_events")
        await stack.execute("DELETE FROM public.fault_poison")

    # The fix is deployed: replay, once.
    replayed = await asyncio.to_thread(cli, stack, "replay", "scoring", RECORDED)
    assert "1 dead letters replayed" in replayed.stderr, replayed.stderr
    again = await asyncio.to_thread(cli, stack, "replay", "scoring", RECORDED)
    assert "0 dead letters replayed" in again.stderr, again.stderr
    summary = await assert_invariant(stack, load=load)
    assert poisoned in await scoring_facts(stack)
    print(f"\n[faults] dead-lettered, fixed, replayed once; {summary}")


async def load_post(load: Load, items: list[dict[str, object]]) -> None:
    async with httpx.AsyncClient() as http:
        await load.post(http, items)


async def test_poison_on_every_consumed_topic_goes_to_each_groups_dead_letters(
    stack: Stack,
) -> None:
    """Two poison records on every topic a group consumes: bytes that are not a CloudEvent, and
    a CloudEvent whose data breaks its contract. Each reading group dead-letters them (with the
    reason), its lag falls back to zero, and the events after them are applied."""
    before = await dead_letters(stack)
    types = {contract.TOPIC.name: contract.CE_TYPE for contract in CONTRACTS}
    consumed = sorted({spec.name for specs in CONSUMER_GROUPS.values() for spec in specs})
    producer = AIOKafkaProducer(
        bootstrap_servers=stack.bootstrap, acks="all", **kafka_client_options()
    )
    await producer.start()
    try:
        for topic in consumed:
            await producer.send_and_wait(topic, key=b"poison-bytes", value=b"\xff not json")
            headers = {
                "ce_specversion": "1.0",
                "ce_id": str(uuid.uuid4()),
                "ce_type": types[topic],
                "ce_source": "/fault-tests",
                "ce_time": datetime.now(UTC).isoformat(),
                "content-type": "application/json",
            }
            await producer.send_and_wait(
                topic,
                key=b"poison-data",
                value=b'{"id": "not a uuid", "version": "x"}',
                headers=[(k, v.encode()) for k, v in headers.items()],
            )
    finally:
        await producer.stop()

    load = Load(stack, seed=8)  # good events behind the poison, on the same topics
    await load.run(batches=3, size=10, concurrency=1)

    expected = {
        (group, spec.name): 1 if (group, spec.name) in IGNORED else 2
        for group, specs in CONSUMER_GROUPS.items()
        for spec in specs
    }

    def new(found: dict[tuple[str, str], list[str]], pair: tuple[str, str]) -> int:
        return len(found.get(pair, [])) - len(before.get(pair, []))

    async def all_dead_lettered() -> bool:
        found = await dead_letters(stack)
        return all(new(found, pair) >= count for pair, count in expected.items())

    await eventually(all_dead_lettered, timeout=60, interval=1, what="every poison dead-lettered")
    summary = await assert_invariant(stack, load=load)  # lag back to 0 in every group

    listings = await asyncio.gather(
        *(asyncio.to_thread(cli, stack, "list", group) for group in CONSUMER_GROUPS)
    )
    for group, listing in zip(CONSUMER_GROUPS, listings, strict=True):
        lines = listing.stdout.splitlines()
        assert all("  from " in line for line in lines), "one line per dead letter"
        per_topic = Counter(line.split("  from ")[1].split("@")[0] for line in lines)
        for spec in CONSUMER_GROUPS[group]:
            pair = (group, spec.name)
            listed = per_topic[spec.name] - len(before.get(pair, []))
            assert listed == expected[pair], (pair, listed, listing.stdout)
        reasons = " ".join(lines)
        assert "is not a CloudEvent" in reasons and "invalid data" in reasons, reasons
    print(f"\n[faults] {len(expected)} group/topic pairs dead-lettered; {summary}")
