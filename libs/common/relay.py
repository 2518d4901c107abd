"""The outbox relay: publishes committed outbox rows to Kafka, in order, at least once.

One relay at a time per service holds a transaction-scoped advisory lock while it publishes a
batch, so extra replicas cannot reorder a key's events (DESIGN pitfall). While rows keep coming
it passes every `linger_seconds` (back to back when batches are full); idle, it wakes on the
outbox trigger's NOTIFY (sent only when the relay may be idle: see
`common.migrations.install_outbox_notify`) and also polls, so a missed notification only
delays, never loses. About once a minute it deletes the rows published longer ago than the
retention (`prune_published`) and the consumers' old dedupe records (`prune_processed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidProducerEpoch,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
)
from opentelemetry.propagate import inject
from opentelemetry.trace import SpanKind, Tracer
from sqlalchemy import bindparam, delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.expression import Executable

from common import metrics
from common.db import asyncpg_dsn
from common.envelope import Mirror, kafka_headers
from common.faults import crash_point
from common.kafka import KeyedBatches
from common.outbox_tables import ServiceTables
from common.telemetry import context_from_headers, producer_span_attributes

log = logging.getLogger(__name__)

# Errors after which an idempotent producer never delivers to that partition again (its sequence
# numbers no longer match the broker's, e.g. after a broker restart lost its producer state):
# only a new producer (a new producer id) gets the outbox moving again.
FATAL_PRODUCER_ERRORS: tuple[type[BaseException], ...] = (
    OutOfOrderSequenceNumber,
    UnknownProducerId,
    InvalidProducerEpoch,
    ProducerFenced,
)
RenewProducer = Callable[[], Awaitable[AIOKafkaProducer]]
_TRY_LOCK = "SELECT pg_try_advisory_xact_lock(hashtext($1))"
PRUNE_EVERY_SECONDS = 60.0
PRUNE_BATCH = 10_000
PRUNE_MAX_BATCHES = 10  # per run: a long backlog of old rows goes over several minutes


class OutboxRow(NamedTuple):
    seq: int
    id: uuid.UUID
    topic: str
    aggregateid: str
    payload: str  # the stored JSON text, sent as it is, never re-encoded
    headers: dict[str, str]


@dataclass(frozen=True)
class DedupeRetention:
    """How long the service's consumer groups keep their dedupe records."""

    groups: tuple[str, ...] = ()
    older_than: timedelta = timedelta(days=8)


class OutboxRelay:
    def __init__(
        self,
        *,
        service: str,
        engine: AsyncEngine,
        database_url: str,
        tables: ServiceTables,
        producer: AIOKafkaProducer,
        tracer: Tracer,
        batch_size: int = 500,
        poll_seconds: float = 0.25,
        linger_seconds: float = 0.05,
        retention: timedelta = timedelta(days=7),
        dedupe: DedupeRetention = DedupeRetention(),
        renew_producer: RenewProducer | None = None,
        mirrors: Sequence[Mirror] = (),
    ) -> None:
        self._service = service
        self._engine = engine
        self._dsn = asyncpg_dsn(database_url)
        self._tables = tables
        self._producer = producer
        self._tracer = tracer
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._linger_seconds = linger_seconds
        self._renew_producer = renew_producer
        self._mirrors = mirrors_by_topic(mirrors)
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._metrics_at = 0.0
        self._retention = retention
        self._dedupe = dedupe
        self._prune_at = 0.0  # the first run prunes at once
        self._db: asyncpg.Connection | None = None
        outbox = f'"{tables.outbox.schema}".{tables.outbox.name}'
        self._schema = tables.outbox.schema
        # One relay per service at a time holds the advisory lock; FOR UPDATE SKIP LOCKED keeps
        # the rows of a batch being published out of any other reader's hands.
        self._fetch = (
            f"SELECT seq, id, topic, aggregateid, payload::text, headers::text FROM {outbox}"  # noqa: S608 - our own table
            " WHERE published_at IS NULL ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED"
        )
        self._mark = f"UPDATE {outbox} SET published_at = now() WHERE seq = ANY($1::bigint[])"  # noqa: S608

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        listener = await self._listen()
        try:
            while not self._stopping.is_set():
                try:
                    published = await self.publish_batch()
                except Exception as exc:
                    log.exception("outbox relay batch failed; retrying")
                    published = 0
                    if isinstance(exc, FATAL_PRODUCER_ERRORS):
                        await self._renew()
                    await self._sleep(self._poll_seconds)
                await self._prune_if_due()
                if published == 0:
                    # Idle: wait for a NOTIFY (sent only to an idle relay) or the poll.
                    await self._sleep(self._poll_seconds)
                    await self._refresh_backlog_metrics()
                    continue
                if published < self._batch_size:
                    # Rows committed meanwhile sent no NOTIFY (older rows were waiting): look
                    # again after a short linger, which gathers a trickle of single writes into
                    # one pass instead of a transaction (and a WAL flush) per row.
                    await self._linger()
                if time.monotonic() - self._metrics_at > 1.0:
                    await self._refresh_backlog_metrics()
                if listener is None or listener.is_closed():
                    listener = await self._listen()
        finally:
            if listener is not None and not listener.is_closed():
                await listener.close()
            if self._db is not None and not self._db.is_closed():
                await self._db.close()

    async def _prune_if_due(self) -> None:
        if time.monotonic() < self._prune_at:
            return
        self._prune_at = time.monotonic() + PRUNE_EVERY_SECONDS
        try:
            pruned = await prune_published(self._engine, self._tables, older_than=self._retention)
            forgotten = sum(
                [
                    await prune_processed(
                        self._engine, self._tables, group=group, older_than=self._dedupe.older_than
                    )
                    for group in self._dedupe.groups
                ]
            )
        except Exception:  # housekeeping must never stop publishing
            log.warning("outbox or dedupe pruning failed; retrying in a minute", exc_info=True)
            return
        if pruned or forgotten:
            log.info(
                "housekeeping: deleted %d outbox rows published over %s ago, %d dedupe records",
                pruned,
                self._retention,
                forgotten,
            )

    async def _renew(self) -> None:
        if self._renew_producer is None:
            return
        try:
            self._producer = await self._renew_producer()
            log.warning("outbox relay: producer replaced after a fatal producer error")
        except Exception:
            log.exception("outbox relay: cannot replace the producer yet")

    async def _linger(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=self._linger_seconds)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        self._wake.clear()

    async def _listen(self) -> asyncpg.Connection | None:
        try:
            connection = await asyncpg.connect(self._dsn, timeout=5)
            await connection.add_listener(self._tables.notify_channel, self._on_notify)
            return connection
        except (OSError, asyncpg.PostgresError, TimeoutError):
            log.warning("outbox relay cannot LISTEN yet; polling")
            return None

    def _on_notify(self, *_: Any) -> None:
        self._wake.set()

    async def publish_batch(self) -> int:
        """Publish up to one batch; returns how many rows were published."""
        connection = await self._connection()
        try:
            async with connection.transaction():
                if not await connection.fetchval(_TRY_LOCK, f"relay:{self._schema}"):
                    return 0
                rows = [
                    OutboxRow(r[0], r[1], r[2], r[3], r[4], orjson.loads(r[5]))
                    for r in await connection.fetch(self._fetch, self._batch_size)
                ]
                if not rows:
                    return 0
                await send_rows(self._producer, self._tracer, rows, mirrors=self._mirrors)
                crash_point("relay.after_send")
                await connection.execute(self._mark, [r.seq for r in rows])
        except Exception:
            if connection.is_closed() or connection.is_in_transaction():
                self._drop_connection()  # broken: the next batch reconnects
            raise
        count_published(self._service, rows, mirrors=self._mirrors)
        return len(rows)

    async def _connection(self) -> asyncpg.Connection:
        """The relay's own connection: plain asyncpg, the hottest loop of every service (rows
        read as text, headers decoded with orjson, no ORM result wrapping)."""
        if self._db is None or self._db.is_closed():
            self._db = await asyncpg.connect(self._dsn, timeout=5, command_timeout=60)
        return self._db

    def _drop_connection(self) -> None:
        if self._db is not None:
            self._db.terminate()
            self._db = None

    async def _refresh_backlog_metrics(self) -> None:
        # At most once a second: under load the relay wakes on every committed request.
        if time.monotonic() - self._metrics_at < 1.0:
            return
        self._metrics_at = time.monotonic()
        outbox = self._tables.outbox
        try:
            async with self._engine.connect() as conn:
                row = (
                    await conn.execute(
                        select(func.count(), func.min(outbox.c.created_at)).where(
                            outbox.c.published_at.is_(None)
                        )
                    )
                ).one()
        except Exception:  # metrics must never break publishing
            log.debug("backlog metrics unavailable", exc_info=True)
            return
        metrics.OUTBOX_BACKLOG.labels(self._service).set(row[0])
        age = (datetime.now(UTC) - row[1]).total_seconds() if row[1] else 0.0
        metrics.OUTBOX_OLDEST_AGE.labels(self._service).set(age)


def mirrors_by_topic(mirrors: Sequence[Mirror]) -> dict[str, list[Mirror]]:
    by_topic: dict[str, list[Mirror]] = {}
    for mirror in mirrors:
        by_topic.setdefault(mirror.source, []).append(mirror)
    return by_topic


class Record(NamedTuple):
    """A Kafka record ready to send: key, value and its own headers encoded, and the trace
    context it continues (`parent`: the W3C fields of the span that wrote it). A run of records
    of one topic sharing a parent goes out under one producer span, whose context joins the
    headers."""

    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    parent: tuple[tuple[str, str], ...]
    event_id: str


TRACE_FIELDS = ("traceparent", "tracestate")


async def send_records(
    producer: AIOKafkaProducer, tracer: Tracer, records: Sequence[Record]
) -> None:
    """Send the records and wait until Kafka has them all, in order per key."""
    batches = KeyedBatches(producer)
    for (topic, parent), run in itertools.groupby(records, key=_topic_and_parent):
        group = list(run)
        # One producer span per run of records continuing the same trace (a batch request's
        # thousand events share one): a span per record cost a quarter of the relay's CPU.
        with tracer.start_as_current_span(
            f"send {topic}",
            context=context_from_headers(dict(parent)),
            kind=SpanKind.PRODUCER,
            attributes=_send_attributes(topic, group),
        ):
            carrier: dict[str, str] = {}
            inject(carrier)  # the consumers continue from this producer span
            trace_headers = kafka_headers(carrier or dict(parent))
            for record in group:
                await batches.add(
                    topic,
                    key=record.key,
                    value=record.value,
                    headers=record.headers + trace_headers,
                )
    await batches.send()


async def send_rows(
    producer: AIOKafkaProducer,
    tracer: Tracer,
    rows: Sequence[OutboxRow],
    *,
    mirrors: Mapping[str, list[Mirror]],
) -> None:
    """Send the rows (and their mirrors) and wait until Kafka has them all, in order per key."""
    await send_records(producer, tracer, list(_with_mirrors(_trace_groups(rows), mirrors)))


def count_published(
    service: str, rows: Sequence[OutboxRow], *, mirrors: Mapping[str, list[Mirror]]
) -> None:
    for topic, count in Counter(row.topic for row in rows).items():
        metrics.OUTBOX_PUBLISHED.labels(service, topic).inc(count)
        for mirror in mirrors.get(topic, ()):
            metrics.OUTBOX_PUBLISHED.labels(service, mirror.topic).inc(count)


def count_sent(service: str, records: Sequence[Record]) -> None:
    for topic, count in Counter(record.topic for record in records).items():
        metrics.OUTBOX_PUBLISHED.labels(service, topic).inc(count)


def _topic_and_parent(record: Record) -> tuple[str, tuple[tuple[str, str], ...]]:
    return record.topic, record.parent


def _trace_groups(rows: Sequence[OutboxRow]) -> Iterator[list[OutboxRow]]:
    """Consecutive rows of one topic that continue one trace context, in outbox order."""

    def parent_of(row: OutboxRow) -> tuple[str, str | None, str | None]:
        return row.topic, row.headers.get("traceparent"), row.headers.get("tracestate")

    for _, group in itertools.groupby(rows, key=parent_of):
        yield list(group)


def _with_mirrors(
    groups: Iterator[list[OutboxRow]], mirrors: Mapping[str, list[Mirror]]
) -> Iterator[Record]:
    """Each group's records, then their copies for every mirror of its topic (in outbox order
    per topic, so each key's order holds on the mirror too)."""
    for group in groups:
        yield from (_record_of(row) for row in group)
        for mirror in mirrors.get(group[0].topic, ()):
            yield from (_record_of(_mirrored(row, mirror)) for row in group)


def _record_of(row: OutboxRow) -> Record:
    own = {name: value for name, value in row.headers.items() if name not in TRACE_FIELDS}
    parent = tuple((name, row.headers[name]) for name in TRACE_FIELDS if name in row.headers)
    return Record(
        topic=row.topic,
        key=row.aggregateid.encode(),
        value=row.payload.encode(),
        headers=kafka_headers(own),
        parent=parent,
        event_id=str(row.id),
    )


def _mirrored(row: OutboxRow, mirror: Mirror) -> OutboxRow:
    mirrored_id, headers = mirror.headers(row.id, row.headers)
    return OutboxRow(row.seq, mirrored_id, mirror.topic, row.aggregateid, row.payload, headers)


def _send_attributes(topic: str, group: Sequence[Record]) -> dict[str, Any]:
    if len(group) == 1:
        record = group[0]
        return producer_span_attributes(
            topic=topic, message_id=record.event_id, key=record.key.decode()
        )
    return producer_span_attributes(topic=topic, count=len(group))


async def prune_published(
    engine: AsyncEngine,
    tables: ServiceTables,
    *,
    older_than: timedelta,
    batch: int = PRUNE_BATCH,
    max_batches: int = PRUNE_MAX_BATCHES,
) -> int:
    """Delete the rows published more than `older_than` ago; returns how many.

    The oldest rows by `seq` are the only candidates, a bounded primary-key range per
    statement (published_at has no index). Each batch stops at the first rows still in their
    retention, and an unpublished row is never deleted, however old.
    """
    outbox = tables.outbox
    oldest = select(outbox.c.seq, outbox.c.published_at).order_by(outbox.c.seq).limit(batch).cte()
    statement = delete(outbox).where(
        outbox.c.seq == oldest.c.seq,
        oldest.c.published_at < func.now() - bindparam("age", older_than),
    )
    return await _delete_in_batches(engine, statement, {}, batch=batch, max_batches=max_batches)


def uuid7_floor(moment: datetime) -> uuid.UUID:
    """The smallest UUIDv7 of `moment`'s millisecond: every earlier UUIDv7 sorts below it."""
    millis = int(moment.timestamp() * 1000)
    return uuid.UUID(int=millis << 80)


async def prune_processed(
    engine: AsyncEngine,
    tables: ServiceTables,
    *,
    group: str,
    older_than: timedelta,
    batch: int = PRUNE_BATCH,
    max_batches: int = PRUNE_MAX_BATCHES,
) -> int:
    """Delete one group's dedupe records of events older than `older_than`; returns how many.

    Event ids are UUIDv7 (`OutboundEvent`): their first 48 bits are the creation time, so the
    old records are a primary-key range of the group, no index on `processed_at` needed. Ids of
    other versions carry no time and are kept.
    """
    processed = tables.processed_events
    statement = text(
        f'DELETE FROM "{processed.schema}".{processed.name} WHERE (consumer_group, event_id) IN ('  # noqa: S608 - our own table, values bound
        f' SELECT consumer_group, event_id FROM "{processed.schema}".{processed.name}'
        "  WHERE consumer_group = :group AND event_id < :floor"
        "  AND substr(CAST(event_id AS text), 15, 1) = '7'"
        "  ORDER BY event_id LIMIT :batch)"
    )
    params = {"group": group, "floor": uuid7_floor(datetime.now(UTC) - older_than), "batch": batch}
    return await _delete_in_batches(engine, statement, params, batch=batch, max_batches=max_batches)


async def _delete_in_batches(
    engine: AsyncEngine,
    statement: Executable,
    params: dict[str, Any],
    *,
    batch: int,
    max_batches: int,
) -> int:
    """Run a DELETE of at most `batch` rows, each in its own transaction, until one deletes
    fewer (nothing left to prune) or `max_batches` ran; returns the rows deleted."""
    total = 0
    for _ in range(max_batches):
        async with engine.begin() as conn:
            deleted: int = (await conn.execute(statement, params)).rowcount
        total += deleted
        if deleted < batch:
            break
    return total


async def outbox_backlog(engine: AsyncEngine, tables: ServiceTables) -> int:
    async with engine.connect() as conn:
        count = await conn.scalar(
            select(func.count())
            .select_from(tables.outbox)
            .where(tables.outbox.c.published_at.is_(None))
        )
    return int(count or 0)
