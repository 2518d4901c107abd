"""Async engine, sessions and the unit of work that commits state and outbox rows together."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from types import TracebackType
from typing import Any

import asyncpg
import orjson
from opentelemetry.propagate import inject
from opentelemetry.trace import SpanKind, Tracer
from sqlalchemy import Table, Text, bindparam, cast, func, insert, literal_column, select
from sqlalchemy.dialects.postgresql import JSONB, Insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from common import audit
from common.envelope import CloudEventHeaders, OutboundEvent
from common.outbox_tables import ServiceTables
from common.settings import ServiceSettings


def create_engine(settings: ServiceSettings) -> AsyncEngine:
    return create_async_engine(
        settings.database_url,
        # Opened on demand and kept: no overflow connections. An overflow connection is closed
        # when returned, so under load every request could pay a new backend, statement
        # preparation and type introspection, and single-POST latency collapsed near 250/s.
        pool_size=settings.db_pool_size,
        max_overflow=0,
        pool_pre_ping=True,
        pool_timeout=5,
        # Bound values (phones, household references) never appear in logged DB errors.
        hide_parameters=True,
        # Fail fast when Postgres is gone instead of hanging requests (readiness turns false).
        connect_args={"timeout": 5, "command_timeout": 60},
        # orjson: JSON columns (outbox payloads, indicator sets) are most of what we write.
        json_serializer=dump_json,
        json_deserializer=orjson.loads,
    )


class DirectConnections:
    """Plain asyncpg connections, without SQLAlchemy, for the hottest request paths (activity
    ingest: single statements, each atomic on its own, so no explicit transaction).

    Per statement, SQLAlchemy's session, pre-ping and result wrapping cost more CPU than the
    statement itself; a single POST paid it six times. The pool is created on first use and
    opens connections on demand (none while PostgreSQL is away); a dead database surfaces as
    asyncpg's connection errors, which the API answers with 503 + Retry-After like any other.
    """

    def __init__(self, settings: ServiceSettings, *, tracer: Tracer | None = None) -> None:
        self._dsn = asyncpg_dsn(settings.database_url)
        self._size = settings.db_pool_size
        self._tracer = tracer if settings.trace_sql else None
        self._pool: asyncpg.Pool | None = None
        self._creating = asyncio.Lock()

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        pool = self._pool or await self._create()
        async with pool.acquire(timeout=5) as connection:
            yield connection

    async def fetch(
        self, connection: asyncpg.Connection, statement: str, *args: Any, operation: str
    ) -> list[asyncpg.Record]:
        """`connection.fetch`, inside a database client span when SQL tracing is on."""
        if self._tracer is None:
            return list(await connection.fetch(statement, *args))
        with self._tracer.start_as_current_span(
            operation,
            kind=SpanKind.CLIENT,
            attributes={"db.system.name": "postgresql", "db.operation.name": operation},
        ):
            return list(await connection.fetch(statement, *args))

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _create(self) -> asyncpg.Pool:
        async with self._creating:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=0,
                    max_size=self._size,
                    max_inactive_connection_lifetime=300,
                    timeout=5,  # connect: fail fast when PostgreSQL is gone
                    command_timeout=60,
                    reset=_rollback_if_open,
                )
            return self._pool


async def _rollback_if_open(connection: asyncpg.Connection) -> None:
    """Release without asyncpg's default reset round trip (RESET ALL, UNLISTEN…): these
    connections never change session state; only an interrupted transaction is undone."""
    if connection.is_in_transaction():
        await connection.execute("ROLLBACK")


def dump_json(obj: Any) -> str:
    """JSON text for JSON columns; values JSON does not know (UUIDs, dates…) become strings."""
    return orjson.dumps(obj, default=_json_default, option=orjson.OPT_NON_STR_KEYS).decode()


def json_once(obj: Any) -> orjson.Fragment:
    """`obj` serialized now, once, and embedded as it is wherever it is dumped again (a
    score's components go to its stored row and to its event)."""
    return orjson.Fragment(dump_json(obj))


def json_rows(rows: Sequence[Sequence[Any]]) -> str:
    """Rows for `jsonb_array_elements(CAST(:rows AS jsonb)) AS r`, read back as `r->>0`, `r->1`…

    For bulk statements of many short values: asyncpg encodes a `text[]` parameter element by
    element, two abstract-base-class checks each (~0.5 µs; 47 ms of client CPU for 5 × 20,000
    values), where one orjson call takes 3 ms, and PostgreSQL's side costs the same. A row's
    values also travel together, so no column can slip against another.
    """
    return orjson.dumps(rows, default=_json_default).decode()


def _json_default(value: Any) -> Any:
    """What orjson does not know: a typed key (a NamedTuple) is the array it is, anything else
    (UUIDs in keys, dates…) its string."""
    return list(value) if isinstance(value, tuple) else str(value)


def insert_rows(table: Table, rows: Sequence[Mapping[str, Any]]) -> Insert:
    """`INSERT INTO table SELECT …` of `rows` (all with the same keys), sent as one parameter.

    The rows travel as one JSON document typed by the table's own row type: a multi-row VALUES
    is compiled anew for every row count and bound value by value (a fifth of the notifications
    score handler's Python for 5,000 states, 15 % of its CPU for alerts under national load).
    This statement compiles once per column list and is cached."""
    names = list(rows[0])
    source = func.jsonb_populate_recordset(
        literal_column(f'NULL::"{table.schema}"."{table.name}"'),
        cast(bindparam("table_rows", dump_json(list(rows)), type_=Text), JSONB),
    ).table_valued(*names)
    return pg_insert(table).from_select(names, select(*(source.c[n] for n in names)))


def upsert_newer(
    table: Table,
    rows: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    *,
    key: Sequence[str] = ("id",),
    columns: Iterable[str] | None = None,
    stamp: str | None = "updated_at",
) -> Insert:
    """`INSERT … ON CONFLICT (key) DO UPDATE` in which only a newer `version` wins.

    The stored row changes only where its `version` is lower than the incoming one, so a replayed,
    redelivered or compacted older event never moves a replica back. `columns` are overwritten
    (default: every column of the rows but the key); `stamp` is set to now() (None: no such
    column). Rows of one statement must have distinct keys. Execute the statement, or add
    `.returning(...)` first: a row comes back only where the upsert applied.
    """
    many = [rows] if isinstance(rows, Mapping) else list(rows)
    names = list(many[0])
    statement = insert_rows(table, many)
    updated = [c for c in names if c not in key] if columns is None else list(columns)
    assignments: dict[str, Any] = {c: statement.excluded[c] for c in updated}
    if stamp is not None:
        assignments[stamp] = func.now()
    return statement.on_conflict_do_update(
        index_elements=[table.c[c] for c in key],
        set_=assignments,
        where=table.c["version"] < statement.excluded["version"],
    )


def asyncpg_dsn(database_url: str) -> str:
    """The same URL for raw asyncpg connections (LISTEN, COPY)."""
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


def current_trace() -> dict[str, str]:
    """The W3C trace context of the current span, as headers."""
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier


OUTBOX_COLUMNS = ("id", "aggregatetype", "aggregateid", "type", "topic", "payload", "headers")


def outbox_record(
    event: OutboundEvent, *, trace: dict[str, str], shared: CloudEventHeaders
) -> tuple[Any, ...]:
    """An outbox row as a COPY record, in `OUTBOX_COLUMNS` order (the JSON as text)."""
    headers = {**event.ce_headers(shared), **trace}
    return (
        event.id,
        event.aggregate_type,
        event.key,
        event.type,
        event.topic,
        dump_json(event.data),
        dump_json(headers),
    )


async def copy_records(
    session: AsyncSession, table: Table, columns: Sequence[str], records: Sequence[tuple[Any, ...]]
) -> None:
    """Binary COPY of `records` into `table`, inside the session's transaction (on its asyncpg
    connection: SQLAlchemy has no COPY of its own)."""
    if not records:
        return
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver: asyncpg.Connection = raw.driver_connection
    await driver.copy_records_to_table(
        table.name, schema_name=table.schema, columns=list(columns), records=records
    )


def outbox_insert_sql(outbox: Table, *, rows: str, order_by: str) -> str:
    """Outbox rows written by a statement that does more: `INSERT … SELECT` from `rows`, a
    relation with the `OUTBOX_COLUMNS` (payload and headers as JSON text), inserted in
    `order_by` order (so numbered by `seq`, the relay's order). Activities' ingest feeds it
    from the statement that stores the activities (one statement, no transaction: its hottest
    path); `UnitOfWork` copies its rows (`copy_records`)."""
    return (
        f'INSERT INTO "{outbox.schema}"."{outbox.name}" ({", ".join(OUTBOX_COLUMNS)})'  # noqa: S608 - our own table
        " SELECT id, aggregatetype, aggregateid, type, topic, CAST(payload AS json),"
        f" CAST(headers AS json) FROM {rows} ORDER BY {order_by}"
    )


class UnitOfWork:
    """One transaction: domain changes plus the events they raise, committed atomically.

    Use one per request or per consumed batch, never shared (see DESIGN pitfalls).
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        tables: ServiceTables,
        *,
        sql_tracer: Tracer | None = None,
    ) -> None:
        """`sql_tracer`: spans for the outbox COPY, which SQLAlchemy's instrumentation (engine
        events) never sees; None when SQL tracing is off."""
        self._sessions = sessions
        self._tables = tables
        self._sql_tracer = sql_tracer
        self._pending: list[OutboundEvent] = []
        self._after_commit: list[Callable[[], None]] = []
        self._session: AsyncSession | None = None

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            raise RuntimeError("unit of work used outside `async with`")
        return self._session

    def publish(self, event: OutboundEvent) -> None:
        self._pending.append(event)

    async def publish_now(self, events: Iterable[OutboundEvent]) -> None:
        """Publish and write the outbox rows at once (bulk paths keep memory flat)."""
        self._pending.extend(events)
        await self.flush_events()

    async def flush_events(self) -> None:
        """The pending events as outbox rows, in order, in one binary COPY: the score publisher
        writes thousands per pass, and a COPY costs PostgreSQL a third less than an `INSERT …
        SELECT` from arrays of the same rows, and this process a third of the encoding (the
        JSON documents travel as they are, no array of text to build and escape). The rows
        take their `seq` in the order given: the relay's order."""
        if not self._pending:
            return
        trace = current_trace()
        shared: dict[tuple[str, str, datetime, str], CloudEventHeaders] = {}
        records = []
        for event in self._pending:
            group = (event.type, event.source, event.time, event.dataschema)
            headers = shared.get(group) or shared.setdefault(group, event.shared_headers())
            records.append(outbox_record(event, trace=trace, shared=headers))
        outbox = self._tables.outbox
        if self._sql_tracer is None:
            await copy_records(self.session, outbox, OUTBOX_COLUMNS, records)
        else:
            with self._sql_tracer.start_as_current_span(
                "COPY",
                kind=SpanKind.CLIENT,
                attributes={
                    "db.system.name": "postgresql",
                    "db.operation.name": "COPY",
                    "db.collection.name": f"{outbox.schema}.{outbox.name}",
                    "db.operation.batch.size": len(records),
                },
            ):
                await copy_records(self.session, outbox, OUTBOX_COLUMNS, records)
        self._pending.clear()

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once this transaction has committed (never if it rolls back): what a
        process keeps in memory about the database changes only with what was written."""
        self._after_commit.append(callback)

    async def commit(self) -> None:
        await self.flush_events()
        entry = audit.pending()
        if entry is not None:  # a request's change: who made it, in the same transaction
            await self.session.execute(insert(self._tables.audit_log).values(**entry.row()))
        await self.session.commit()
        if entry is not None:
            entry.recorded = True
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            callback()

    async def rollback(self) -> None:
        self._pending.clear()
        self._after_commit.clear()
        await self.session.rollback()

    async def __aenter__(self) -> UnitOfWork:
        self._session = self._sessions()
        await self._session.begin()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self.session.in_transaction():
                await self.rollback()
        finally:
            await self.session.close()
            self._session = None


@asynccontextmanager
async def session_scope(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A read-only session for queries."""
    async with sessions() as session:
        yield session
