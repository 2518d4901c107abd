"""Scores go to Kafka from their history (the changelog): in the order they were written, each
version once per position, writers of scores one after the other, one relay at a time."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text

from common import topics
from scoring import adapters
from scoring.domain import SubjectPeriod
from scoring.use_cases.changelog import score_event_id
from tests.helpers import eventually, read_topic


def _score(subject_id: str, *, score: float) -> dict[str, Any]:
    return {
        "subject_type": "commune",
        "subject_id": subject_id,
        "period": "2026-11",
        "criteria_set": "default@1",
        "score": score,
        "max_score": 100.0,
        "components": [],
        "indicators": {"activities": score},
        "rank": None,
        "rank_of": None,
        "as_of_event_time": None,
        "traceparent": None,
    }


async def test_each_version_reaches_both_score_topics_in_order_with_a_stable_id(
    scoring: Any, infra: Any
) -> None:
    _, runtime = scoring
    subject = f"CL{uuid.uuid4().hex[:8]}"
    key = f"commune:{subject}:2026-11"
    for value in (10.0, 20.0, 30.0):  # three transactions: versions 1, 2, 3
        async with runtime.unit_of_work() as uow:
            await adapters.upsert_scores(
                uow.session, [_score(subject, score=value)], computed_at=datetime.now(UTC)
            )
            await uow.commit()

    def has_three(records: list[Any]) -> bool:
        return len([r for r in records if r.key == key.encode()]) >= 3

    for topic in (topics.SCORE_UPDATED.name, topics.SCORE_LATEST.name):
        records = await read_topic(infra.kafka_bootstrap_servers, topic, until=has_three)
        mine = [r for r in records if r.key == key.encode()]
        assert [json.loads(r.value)["version"] for r in mine] == [1, 2, 3]
        assert [json.loads(r.value)["score"] for r in mine] == [10.0, 20.0, 30.0]
    updated = await read_topic(
        infra.kafka_bootstrap_servers, topics.SCORE_UPDATED.name, until=has_three
    )
    ids = [dict(r.headers)["ce_id"].decode() for r in updated if r.key == key.encode()]

    async def all_three_sent() -> list[adapters.ChangelogRow] | None:
        # sent: the relay's position moved past them
        async with runtime.sessions() as session:
            sent = await adapters.sent_versions(
                session, SubjectPeriod("commune", subject, "2026-11")
            )
        return sent if len(sent) == 3 else None

    rows = await eventually(all_three_sent, what="the relay's position moved past the versions")
    # the id is a function of the version: a version sent again is deduplicated downstream
    assert ids == [str(score_event_id(row)) for row in rows]
    assert [row.seq for row in rows] == sorted(row.seq for row in rows)


async def test_writers_of_scores_take_turns(scoring: Any) -> None:
    """A second writer waits for the first to commit: numbers are drawn in commit order, so a
    relay that sees a row has already seen every row numbered before it."""
    _, runtime = scoring
    subject = f"CL{uuid.uuid4().hex[:8]}"
    first = runtime.unit_of_work()
    async with first as uow:
        await adapters.upsert_scores(
            uow.session, [_score(subject, score=1.0)], computed_at=datetime.now(UTC)
        )

        async def second_writer() -> None:
            async with runtime.unit_of_work() as other:
                await adapters.upsert_scores(
                    other.session,
                    [_score(f"{subject}-2", score=2.0)],
                    computed_at=datetime.now(UTC),
                )
                await other.commit()

        waiting = asyncio.create_task(second_writer())
        await asyncio.sleep(0.5)
        assert not waiting.done(), "a second writer must wait for the first one's commit"
        await uow.commit()
    await asyncio.wait_for(waiting, timeout=10)
    async with runtime.sessions() as session:
        seqs = dict(
            (
                await session.execute(
                    text(
                        "SELECT subject_id, seq FROM scoring.score_history"
                        " WHERE subject_id IN (:a, :b)"
                    ),
                    {"a": subject, "b": f"{subject}-2"},
                )
            ).all()
        )
    assert seqs[subject] < seqs[f"{subject}-2"]


async def test_one_relay_at_a_time_holds_the_changelog(scoring: Any) -> None:
    _, runtime = scoring
    async with runtime.unit_of_work() as holder:
        # The service's own relay takes the lock for a moment every pass: wait for a gap.
        deadline = asyncio.get_running_loop().time() + 10
        while await adapters.take_unpublished(holder.session, limit=1) is None:
            assert asyncio.get_running_loop().time() < deadline, "the changelog never came free"
            await holder.rollback()
            await asyncio.sleep(0.05)
        async with runtime.unit_of_work() as other:
            assert await adapters.take_unpublished(other.session, limit=1) is None
