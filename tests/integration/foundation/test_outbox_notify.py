"""The outbox trigger wakes an idle relay, and only an idle one (real PostgreSQL).

A NOTIFY serializes the commits of every notifying transaction, so the trigger must not send
one per insert while the relay is busy with older rows.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import create_async_engine

from common.db import asyncpg_dsn
from common.migrations import install_outbox_notify
from common.outbox_tables import define_service_tables

SCHEMA = "notifytest"


class _Statements:
    """Stands in for alembic's `op`: collects what the migration helper executes."""

    def __init__(self) -> None:
        self.sql: list[str] = []

    def execute(self, statement: str) -> None:
        self.sql.append(statement)


@pytest.fixture
async def connection(infra: Any) -> Any:
    engine = create_async_engine(infra.database_url)
    async with engine.begin() as conn:
        await conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        await conn.exec_driver_sql(f"CREATE SCHEMA {SCHEMA}")
        await conn.run_sync(
            define_service_tables(MetaData(schema=SCHEMA)).outbox.metadata.create_all
        )
    await engine.dispose()
    op = _Statements()
    install_outbox_notify(op, SCHEMA)
    db = await asyncpg.connect(asyncpg_dsn(infra.database_url))
    for statement in op.sql:
        await db.execute(statement)
    yield db
    await db.execute(f"DROP SCHEMA {SCHEMA} CASCADE")
    await db.close()


async def _insert(db: asyncpg.Connection) -> None:
    await db.execute(
        f"INSERT INTO {SCHEMA}.outbox (id, aggregatetype, aggregateid, type, topic, payload,"
        " headers) VALUES ($1, 'a', 'k', 't', 'topic', '{}', '{}')",
        uuid.uuid4(),
    )


async def test_notifies_an_idle_relay_only(connection: asyncpg.Connection, infra: Any) -> None:
    channel = define_service_tables(MetaData(schema=SCHEMA)).notify_channel
    received: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(asyncpg_dsn(infra.database_url))
    await listener.add_listener(channel, lambda *args: received.put_nowait(args[2]))
    try:
        await _insert(connection)  # nothing older waits: the relay may be idle
        await asyncio.wait_for(received.get(), timeout=2)

        await _insert(connection)  # the first row still waits: the relay is busy
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(received.get(), timeout=0.5)

        await connection.execute(f"UPDATE {SCHEMA}.outbox SET published_at = now()")
        await _insert(connection)  # all published: idle again
        await asyncio.wait_for(received.get(), timeout=2)
    finally:
        await listener.close()
