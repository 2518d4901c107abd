"""Fixes found by tests/faults, pinned without I/O.

The relay renews a broken idempotent producer:
Found by tests/faults: after a broker restart a producer can get `OutOfOrderSequenceNumber` on
every send to a partition forever; only a new producer id gets the outbox moving again.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.errors import OutOfOrderSequenceNumber

from tests.unit.common.relays import unit_relay


async def test_a_fatal_producer_error_renews_the_producer_and_publishing_resumes() -> None:
    old, new = object(), object()
    used: list[Any] = []
    renewals = 0

    async def renew() -> Any:
        nonlocal renewals
        renewals += 1
        return new

    relay = unit_relay(producer=old, poll_seconds=0.01, renew_producer=renew)

    async def publish_batch() -> int:
        used.append(relay._producer)
        if len(used) == 1:
            raise OutOfOrderSequenceNumber()
        relay.stop()
        return 0

    async def no_listener() -> None:
        return None

    async def no_metrics() -> None:
        return None

    relay.publish_batch = publish_batch  # type: ignore[method-assign]
    relay._listen = no_listener  # type: ignore[method-assign]
    relay._refresh_backlog_metrics = no_metrics  # type: ignore[method-assign]
    await asyncio.wait_for(relay.run(), timeout=5)
    assert renewals == 1
    assert used == [old, new]


def test_postgres_starting_up_is_transient_though_sqlalchemy_wraps_it_in_a_bare_dbapierror() -> (
    None
):
    """Found by tests/faults (PostgreSQL crash): a 500 instead of a 503, and a consumer would
    have dead-lettered valid events while the database restarted."""
    import asyncpg
    from sqlalchemy import exc as sa_exc
    from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi

    from common.consumer import is_transient

    dbapi = AsyncAdapt_asyncpg_dbapi(asyncpg)
    starting = asyncpg.CannotConnectNowError("the database system is starting up")
    starting.sqlstate = "57P03"  # set by asyncpg from the server's answer
    try:
        raise dbapi.Error(starting.args[0], starting) from starting
    except dbapi.Error as translated:
        wrapped = sa_exc.DBAPIError.instance(None, None, translated, dbapi.Error)
    assert type(wrapped) is sa_exc.DBAPIError
    assert is_transient(wrapped)
    assert not is_transient(sa_exc.DBAPIError("x", None, dbapi.Error("boom", None)))
    # two consumer workers locking the same rows: the server rolls one back, a retry succeeds
    deadlock = asyncpg.DeadlockDetectedError("deadlock detected")
    try:
        raise dbapi.Error(deadlock.args[0], deadlock) from deadlock
    except dbapi.Error as translated:
        assert is_transient(sa_exc.DBAPIError.instance(None, None, translated, dbapi.Error))
