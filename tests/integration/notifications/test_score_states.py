"""The scores' judged states held in memory by the notifications consumer: learnt only from
committed transactions, forgotten on a rebalance (real PostgreSQL, real Kafka group)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from sqlalchemy import text

from common import topics
from common.kafka import make_consumer
from notifications import bootstrap
from notifications.adapters import ScoreStates
from notifications.domain import ScoreKey, ScoreState
from notifications.settings import NotificationsSettings


@pytest_asyncio.fixture(scope="module")
async def runtime(apply_env: None) -> AsyncIterator[Any]:
    runtime = bootstrap.build_runtime(NotificationsSettings())
    await runtime.start(workers=False)
    yield runtime
    await runtime.stop()


def new_key() -> ScoreKey:
    return ScoreKey("team", str(uuid.uuid4()), "2026-11")


async def read(runtime: Any, states: ScoreStates, key: ScoreKey) -> ScoreState | None:
    """As a consumed batch reads: in a transaction that commits."""
    async with runtime.unit_of_work() as uow:
        found = (await states.within(uow).read([key])).get(key)
        await uow.commit()
    return found


async def save(runtime: Any, states: ScoreStates, key: ScoreKey, state: ScoreState) -> None:
    async with runtime.unit_of_work() as uow:
        await states.within(uow).save({key: state})
        await uow.commit()


async def set_in_table(runtime: Any, key: ScoreKey, *, version: int, score: float) -> None:
    """Another writer (a consumer that held the partition meanwhile) changes the row."""
    async with runtime.unit_of_work() as uow:
        await uow.session.execute(
            text(
                "INSERT INTO notifications.score_state"
                " (subject_type, subject_id, period, version, score) VALUES (:t, :i, :p, :v, :s)"
                " ON CONFLICT (subject_type, subject_id, period)"
                " DO UPDATE SET version = :v, score = :s"
            ),
            {"t": key.subject_type, "i": key.subject_id, "p": key.period, "v": version, "s": score},
        )
        await uow.commit()


async def test_a_committed_state_is_read_from_memory_until_a_rebalance(runtime) -> None:  # type: ignore[no-untyped-def]
    states, key = ScoreStates(), new_key()
    await save(runtime, states, key, ScoreState(version=1, score=50))
    await set_in_table(runtime, key, version=2, score=70)
    assert await read(runtime, states, key) == ScoreState(version=1, score=50)  # memory
    states.forget()
    assert await read(runtime, states, key) == ScoreState(version=2, score=70)  # the table


async def test_a_rolled_back_state_is_never_learnt(runtime) -> None:  # type: ignore[no-untyped-def]
    states, key = ScoreStates(), new_key()
    async with runtime.unit_of_work() as uow:
        view = states.within(uow)
        await view.save({key: ScoreState(version=1, score=50)})
        assert await view.read([key]) == {key: ScoreState(version=1, score=50)}  # its own write
        await uow.rollback()
    assert len(states) == 0
    assert await read(runtime, states, key) is None


async def test_a_transaction_begun_before_a_rebalance_teaches_nothing(runtime) -> None:  # type: ignore[no-untyped-def]
    states, key = ScoreStates(), new_key()
    async with runtime.unit_of_work() as uow:
        view = states.within(uow)
        await view.save({key: ScoreState(version=1, score=50)})
        states.forget()  # the partition was revoked while the batch ran
        await uow.commit()
    await set_in_table(runtime, key, version=3, score=10)
    assert await read(runtime, states, key) == ScoreState(version=3, score=10)


async def test_an_absent_state_is_remembered_and_a_refused_save_is_not(runtime) -> None:  # type: ignore[no-untyped-def]
    states, key = ScoreStates(), new_key()
    assert await read(runtime, states, key) is None
    await set_in_table(runtime, key, version=5, score=80)
    assert await read(runtime, states, key) is None  # known absent, from memory
    states.forget()
    await save(runtime, states, key, ScoreState(version=4, score=20))  # older: not stored
    assert await read(runtime, states, key) == ScoreState(version=5, score=80)


async def test_memory_is_bounded(runtime) -> None:  # type: ignore[no-untyped-def]
    states = ScoreStates(max_keys=3)
    for _ in range(3):
        await read(runtime, states, new_key())
    assert len(states) == 3
    await read(runtime, states, new_key())
    assert len(states) == 0  # past the bound: starts again from the table


async def test_a_consumer_group_calls_back_when_it_is_assigned_partitions(infra) -> None:  # type: ignore[no-untyped-def]
    calls: list[str] = []
    consumer = make_consumer(
        infra.kafka_bootstrap_servers,
        group_id=f"test-rebalance-{uuid.uuid4().hex[:8]}",
        topics=[topics.SCORE_UPDATED.name],
        max_poll_records=10,
        on_rebalance=lambda: calls.append("rebalance"),
    )
    await consumer.start()
    try:
        for _ in range(100):
            await consumer.getmany(timeout_ms=100)
            if consumer.assignment():
                break
        assert consumer.assignment()
        await asyncio.sleep(0)
        assert calls, "no rebalance callback on assignment"
    finally:
        await consumer.stop()
