"""Processes killed with SIGKILL at the worst moments; nothing accepted is lost or counted twice.

Issue #9 fault scenarios 1, 2, 3 and 6, on the real services.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from common.topics import ACTIVITY_RECORDED, SCORE_UPDATED
from tests.faults.invariant import assert_applied_in_log_order, assert_invariant
from tests.faults.stack import Load, Stack
from tests.helpers import eventually, read_topic

pytestmark = pytest.mark.slow
RECORDED = ACTIVITY_RECORDED.name
UPDATED = SCORE_UPDATED.name


async def test_activities_api_killed_mid_batch_posts_and_clients_retry_same_ids(
    stack: Stack,
) -> None:
    """1. `kill -9` of the activities API while three clients post batches; they retry the
    unanswered batches with the same ids until the restarted API answers."""
    load = Load(stack, seed=1)
    posting = asyncio.create_task(load.run(batches=24, size=20, concurrency=3, pause=0.02))

    async def some_answered() -> bool:
        return len(load.statuses) >= 60

    await eventually(some_answered, timeout=30, what="the first batches answered")
    stack["activities"].kill()
    await asyncio.sleep(1.0)  # clients keep retrying against a dead port
    stack["activities"].start()
    await stack.wait_ready("activities")
    await asyncio.wait_for(posting, timeout=120)

    assert load.failures, "no client saw the crash: the kill did not hit the load"
    assert len(load.answered) == 24 * 20
    summary = await assert_invariant(stack, load=load)
    print(f"\n[faults] API kill: {len(load.failures)} failed requests retried; {summary}")


async def test_activities_relay_killed_after_send_before_marking_published(
    stack: Stack,
) -> None:
    """2. The relay dies after Kafka acknowledged a batch and before the rows are marked
    published: the restarted relay sends them again, and scoring counts them once."""
    worker = stack["activities-worker"]
    assert await asyncio.to_thread(worker.terminate) == 0
    load = Load(stack, seed=2)
    await load.run(batches=4, size=25, concurrency=1)
    backlog = await stack.outbox_backlog("activities")
    assert backlog == 100, backlog
    before = await stack.end_offsets(RECORDED)

    worker.start(CDT_FAULT_POINTS="relay.after_send")
    assert await worker.wait_exit(60) == 137, worker.tail()
    assert "crashing at relay.after_send" in worker.tail()
    assert await stack.end_offsets(RECORDED) == before + 100, "the batch reached Kafka"
    assert await stack.outbox_backlog("activities") == 100, "...but none was marked published"

    worker.start()
    summary = await assert_invariant(stack, load=load)
    assert await stack.end_offsets(RECORDED) == before + 200, "every row was sent twice"
    print(f"\n[faults] relay kill: 100 events published twice; {summary}")


async def test_score_changelog_relay_killed_after_send_before_moving_its_position(
    stack: Stack,
) -> None:
    """2b. Scoring's changelog relay dies after Kafka acknowledged a batch of score versions
    and before its position moved: the restarted relay sends them again under the same event
    ids (readers dedupe them), and every key's versions still arrive in order."""
    worker = stack["scoring-worker"]
    assert await asyncio.to_thread(worker.terminate) == 0
    load = Load(stack, seed=21)
    await load.run(batches=3, size=20, concurrency=1)
    before = await stack.end_offsets(UPDATED)

    worker.start(CDT_FAULT_POINTS="relay.after_send")
    assert await worker.wait_exit(60) == 137, worker.tail()
    assert "crashing at relay.after_send" in worker.tail()
    sent = await stack.end_offsets(UPDATED) - before
    assert sent > 0, "the batch reached Kafka"
    assert await stack.score_changelog_backlog() >= sent, "...but the position did not move"

    worker.start()
    summary = await assert_invariant(stack, load=load)
    total = await stack.end_offsets(UPDATED)
    records = await read_topic(stack.bootstrap, UPDATED, until=lambda rs: len(rs) >= total)
    ids = [dict(r.headers)["ce_id"] for r in records]
    assert len(ids) - len(set(ids)) >= sent, "the batch was sent again, under the same ids"
    versions = await stack.rows(
        "SELECT count(*) AS n FROM scoring.score_history WHERE seq IS NOT NULL"
    )
    assert len(set(ids)) == versions[0]["n"], "every version on the topic, none missing"
    latest: dict[tuple[bytes, str], int] = {}
    for record in records:  # a version sent again repeats it, never goes back before it
        payload = json.loads(record.value)
        key = (record.key, payload["criteria_set"])
        assert payload["version"] >= latest.get(key, 0), key
        latest[key] = payload["version"]
    print(f"\n[faults] changelog relay kill: {sent} score records sent twice; {summary}")


async def test_scoring_consumer_killed_after_db_commit_before_offset_commit(
    stack: Stack,
) -> None:
    """3. The scoring consumer dies between its DB commit and its offset commit: the batch is
    delivered again and its dedupe records make the second pass a no-op."""
    worker = stack["scoring-worker"]
    assert await asyncio.to_thread(worker.terminate) == 0
    load = Load(stack, seed=3)
    await load.run(batches=3, size=20, concurrency=1)

    async def published() -> bool:
        return await stack.outbox_backlog("activities") == 0

    await eventually(published, timeout=30, what="the activities relay")
    waiting = (await stack.lag("scoring"))[RECORDED]
    assert waiting >= 60, waiting
    ids = list(load.answered)

    worker.start(CDT_FAULT_POINTS="consumer.after_db_commit")
    assert await worker.wait_exit(60) == 137, worker.tail()
    assert "crashing at consumer.after_db_commit" in worker.tail()
    applied = await stack.scalar(
        "SELECT count(*) FROM scoring.activity_facts WHERE activity_id::text = ANY(:ids)", ids=ids
    )
    assert applied > 0, "the DB commit happened before the crash"
    assert (await stack.lag("scoring"))[RECORDED] == waiting, "...and the offsets did not move"

    worker.start()
    summary = await assert_invariant(stack, load=load)
    print(f"\n[faults] consumer kill: {applied} facts committed before the crash; {summary}")


async def test_second_scoring_consumer_joins_then_dies_without_double_counting(
    stack: Stack,
) -> None:
    """6. A second scoring worker joins the group under load (rebalance) and is then killed
    (its partitions move back after the session timeout): nothing is counted twice, and every
    partition (so every team, the key) is applied in log order."""
    since = await stack.positions(RECORDED)
    load = Load(stack, seed=6)
    posting = asyncio.create_task(load.run(batches=40, size=10, concurrency=2, pause=0.15))
    second = stack.extra_worker("scoring")
    second.start()

    async def two_members() -> bool:
        return await stack.group_members("scoring") == 2

    await eventually(two_members, timeout=60, interval=0.5, what="the second consumer to join")
    await asyncio.sleep(3)  # it holds partitions and processes batches
    second.kill()

    async def one_member() -> bool:
        return await stack.group_members("scoring") == 1

    await eventually(one_member, timeout=30, interval=0.5, what="the dead member to be evicted")
    await asyncio.wait_for(posting, timeout=120)
    summary = await assert_invariant(stack, load=load)
    checked = await assert_applied_in_log_order(stack, since=since)
    assert checked >= 400, checked
    print(f"\n[faults] rebalance: {checked} events applied in log order; {summary}")
