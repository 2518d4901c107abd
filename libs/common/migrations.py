"""Alembic, once for every service: the env.py body, programmatic upgrade, and the outbox DDL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from alembic import command, context, op
from alembic.config import Config
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from common.outbox_tables import define_service_tables


def alembic_config(*, migrations_dir: Path, database_url: str, schema: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.attributes["database_url"] = database_url
    config.attributes["schema"] = schema
    return config


def upgrade(*, migrations_dir: Path, database_url: str, schema: str) -> None:
    """`alembic upgrade head` for one service. Blocking: call from a thread in async code."""
    command.upgrade(
        alembic_config(migrations_dir=migrations_dir, database_url=database_url, schema=schema),
        "head",
    )


def run_env(metadata: MetaData) -> None:
    """The whole of a service's `migrations/env.py`: online, async, in the service's schema."""
    config = context.config
    url = config.attributes["database_url"]
    schema = config.attributes["schema"]

    def do_run(connection: Connection) -> None:
        # Several processes of one service may start together: migrate one at a time.
        connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": schema})
        connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table_schema=schema,
            include_schemas=True,
        )
        with context.begin_transaction():
            context.run_migrations()

    async def run_async() -> None:
        engine = create_async_engine(url)
        try:
            async with engine.begin() as connection:
                await connection.run_sync(do_run)
        finally:
            await engine.dispose()

    asyncio.run(run_async())


def create_outbox_objects(op: Any, schema: str) -> None:
    """Outbox + processed_events tables and the NOTIFY trigger that wakes the relay."""
    tables = define_service_tables(MetaData(schema=schema))
    bind = op.get_bind()
    tables.outbox.create(bind)
    tables.processed_events.create(bind)
    install_outbox_notify(op, schema)


def create_audit_log(op: Any, schema: str) -> None:
    """The audit trail's table (`common.audit`), refusing UPDATE, DELETE and TRUNCATE: no
    API and no bug of ours can rewrite who did what."""
    tables = define_service_tables(MetaData(schema=schema))
    tables.audit_log.create(op.get_bind())
    op.execute(
        f"""
        CREATE FUNCTION "{schema}".audit_log_is_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'the audit log is append-only' USING ERRCODE = 'insufficient_privilege';
        END $$
        """
    )
    op.execute(
        f'CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON "{schema}".audit_log'
        f' FOR EACH ROW EXECUTE FUNCTION "{schema}".audit_log_is_append_only()'
    )
    op.execute(
        f'CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON "{schema}".audit_log'
        f' FOR EACH STATEMENT EXECUTE FUNCTION "{schema}".audit_log_is_append_only()'
    )


def drop_audit_log(op: Any, schema: str) -> None:
    op.execute(f'DROP TABLE "{schema}".audit_log')
    op.execute(f'DROP FUNCTION "{schema}".audit_log_is_append_only()')


RECENT_ROWS = 64


def install_outbox_notify(op: Any, schema: str, *, only_when_idle: bool = True) -> None:
    """The trigger that wakes the relay with a NOTIFY after outbox inserts.

    Only when the relay may be idle: if one of the rows just before still waits, the relay is
    busy and finds the new rows in its next pass anyway. PostgreSQL serializes the commits of
    all transactions that sent a NOTIFY (a database-wide lock held through the commit's WAL
    flush): notifying on every insert capped single-event ingest near 300 requests/s and let
    one slow flush stall every request. A missed wake-up (a race with the relay's last pass)
    costs at most the relay's poll interval.
    """
    channel = define_service_tables(MetaData(schema=schema)).notify_channel
    # Only the rows just before this statement's: a primary-key range of bounded size (the
    # partial index of unpublished rows can hold thousands of dead entries after a burst).
    condition = (
        f"""NOT EXISTS (SELECT 1 FROM "{schema}".outbox o
        WHERE o.seq BETWEEN (SELECT min(i.seq) FROM inserted i) - {RECENT_ROWS}
        AND (SELECT min(i.seq) FROM inserted i) - 1 AND o.published_at IS NULL)"""  # noqa: S608
        if only_when_idle
        else "true"
    )
    # asyncpg prepares each statement: one command per execute.
    op.execute(
        f"""CREATE OR REPLACE FUNCTION "{schema}".notify_outbox() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF {condition} THEN PERFORM pg_notify('{channel}', ''); END IF;
            RETURN NULL;
        END $$"""
    )
    op.execute(f'DROP TRIGGER IF EXISTS outbox_notify ON "{schema}".outbox')
    op.execute(
        f"""CREATE TRIGGER outbox_notify AFTER INSERT ON "{schema}".outbox
        REFERENCING NEW TABLE AS inserted
        FOR EACH STATEMENT EXECUTE FUNCTION "{schema}".notify_outbox()"""
    )


def outbox_notify_when_idle(schema: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """`upgrade, downgrade` of a service's revision installing the idle-only NOTIFY trigger."""

    def upgrade() -> None:
        install_outbox_notify(op, schema)

    def downgrade() -> None:
        install_outbox_notify(op, schema, only_when_idle=False)

    return upgrade, downgrade


def convert_columns(op: Any, table: str, columns: Sequence[str], *, to: str) -> None:
    """Give columns a new type, converting their values with a cast (e.g. jsonb <-> json)."""
    for column in columns:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE {to} USING {column}::{to}")


def compress_with_lz4(op: Any, table: str, *columns: str) -> None:
    """Large values of these columns compressed with lz4 (faster than the default pglz), where
    the server was built with it; elsewhere they keep pglz."""
    alters = ", ".join(f"ALTER COLUMN {column} SET COMPRESSION lz4" for column in columns)
    op.execute(
        f"""DO $$ BEGIN
            ALTER TABLE {table} {alters};
        EXCEPTION WHEN feature_not_supported THEN NULL;
        END $$"""
    )


def outbox_storage(schema: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """`upgrade, downgrade` of a service's revision storing outbox payloads and headers as `json`.

    The relay sends a payload as it was written and nothing queries inside it, so `jsonb`'s
    binary form was pure cost, parsed on insert and printed again on every read (2.5 KB score
    payloads: 94 -> 43 µs per inserted row, 112 -> 40 µs per row read and marked published).
    Large payloads are compressed with lz4.

    Tried and not kept: pages half full (fillfactor 50), so that the relay's "published"
    update lands on the row's own page and only the changed bytes are logged. WAL per
    published 650-byte event fell from 2.6 to 1.6 KB in isolation, but batch ingest and the
    single-POST tail were worse in an A/B of the ingest benchmark (twice as many pages).
    """

    table = f'"{schema}".outbox'

    def upgrade() -> None:
        convert_columns(op, table, ("payload", "headers"), to="json")
        compress_with_lz4(op, table, "payload")

    def downgrade() -> None:
        convert_columns(op, table, ("payload", "headers"), to="jsonb")

    return upgrade, downgrade


def drop_outbox_objects(op: Any, schema: str) -> None:
    op.execute(f'DROP TABLE IF EXISTS "{schema}".outbox, "{schema}".processed_events')
    op.execute(f'DROP FUNCTION IF EXISTS "{schema}".notify_outbox()')
