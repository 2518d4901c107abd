"""The consumer runner: effectively-once processing on top of at-least-once Kafka delivery.

For each polled batch: one DB transaction inserts `(group, event_id)` into `processed_events`
(`ON CONFLICT DO NOTHING`) and applies only the new events; the DB commits, *then* the offsets
do. A crash between the two redelivers the batch, and the dedupe table absorbs it.
A failing batch is retried record by record: infrastructure errors (DB or broker down) are
retried until they pass, without moving the offset; any other error a few times in place
(keeping per-key order), then the record goes to `<topic>.dlt.<group>` and the rest carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaConnectionError,
    KafkaError,
)
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Tracer
from sqlalchemy import Table, TextClause, text
from sqlalchemy import exc as sa_exc

from common import metrics
from common.db import UnitOfWork
from common.envelope import InboundEvent, PoisonRecordError, decode_kafka_record
from common.faults import crash_point
from common.kafka import make_consumer
from common.outbox_tables import ServiceTables
from common.settings import KafkaSettings
from common.telemetry import consumer_span_attributes, context_from_headers, span_link
from common.topics import dead_letter_topic

log = logging.getLogger(__name__)

Handler = Callable[[UnitOfWork, Sequence[InboundEvent]], Awaitable[None]]
EventHandler = Callable[[UnitOfWork, InboundEvent], Awaitable[None]]

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
)


# After a cancellation, how long a batch's offset commit may still take (the broker answers in
# milliseconds; a dead one must not hold the shutdown up).
COMMIT_ON_CANCEL_SECONDS = 5.0
UNSET = 2**63  # beyond any offset

# SQLSTATE classes of a database that is unreachable or restarting: 08 connection exceptions,
# 57P01-57P03 admin/crash shutdown and "the database system is starting up"; and class 40,
# a transaction the server rolled back to let others go on (deadlock, serialization failure):
# the same work succeeds when tried again.
TRANSIENT_SQLSTATES = ("08", "57P", "40")


def is_transient(exc: BaseException) -> bool:
    """An infrastructure failure worth retrying. SQLAlchemy wraps some driver errors in a bare
    `DBAPIError` (e.g. `CannotConnectNowError` while PostgreSQL starts after a crash), so the
    wrapped error and its cause are looked at too."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    causes: list[BaseException | None] = [exc]
    if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None:
        causes += [exc.orig, exc.orig.__cause__]
    for cause in causes:
        if isinstance(cause, TRANSIENT_ERRORS):
            return True
        sqlstate = getattr(cause, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(TRANSIENT_SQLSTATES):
            return True
    return False


def dispatch_by_type(handlers: Mapping[str, EventHandler]) -> Handler:
    """A batch handler that applies each event, in order, with the handler for its `ce_type`.

    Event types nobody handles are skipped: topics may carry types added later.
    """

    async def handle(uow: UnitOfWork, events: Sequence[InboundEvent]) -> None:
        for event in events:
            handler = handlers.get(event.type)
            if handler is not None:
                await handler(uow, event)

    return handle


class ConsumerRunner:
    def __init__(
        self,
        *,
        group: str,
        topics: Sequence[str],
        handler: Handler,
        unit_of_work: Callable[[], UnitOfWork],
        tables: ServiceTables,
        bootstrap_servers: str,
        producer: AIOKafkaProducer,
        tracer: Tracer,
        batch_size: int = 500,
        max_retries: int = 3,
        retry_backoff_seconds: float = 0.2,
        session_timeout_ms: int = 10_000,
        on_rebalance: Callable[[], None] | None = None,
        security: KafkaSettings | None = None,
    ) -> None:
        self.group = group
        self._security = security
        self._on_rebalance = on_rebalance
        self._topics = list(topics)
        self._handler = handler
        self._unit_of_work = unit_of_work
        self._tables = tables
        self._bootstrap = bootstrap_servers
        self._producer = producer
        self._tracer = tracer
        self._batch_size = batch_size
        self._max_retries = max_retries
        self._backoff = retry_backoff_seconds
        self._session_timeout_ms = session_timeout_ms
        self._stopping = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._next_offsets: dict[TopicPartition, int] = {}
        self.started = asyncio.Event()

    def stop(self) -> None:
        """Drain: finish and commit the batch in hand, then leave the group."""
        self._stopping.set()

    def assignment(self) -> set[TopicPartition]:
        """The partitions this consumer holds now (none before it joined the group)."""
        return set(self._consumer.assignment()) if self._consumer is not None else set()

    def backlog(self) -> int:
        """Records of its partitions not handled yet, as of the high watermarks its last fetches
        saw: no request to the broker, so cheap enough to ask before every publication pass
        (`common.lag` measures the lag that is reported)."""
        consumer = self._consumer
        if consumer is None:
            return 0
        behind = 0
        for tp in consumer.assignment():
            high, handled = consumer.highwater(tp), self._next_offsets.get(tp)
            if high is not None and handled is not None:
                behind += max(high - handled, 0)
        return behind

    async def run(self) -> None:
        consumer = await self._start_consumer()
        if consumer is None:
            return
        try:
            while not self._stopping.is_set():
                polled = await consumer.getmany(timeout_ms=500, max_records=self._batch_size)
                if polled:
                    await self._process_polled(consumer, polled)
        finally:
            await consumer.stop()
            self._consumer = None

    async def _start_consumer(self) -> AIOKafkaConsumer | None:
        while not self._stopping.is_set():
            consumer = make_consumer(
                self._bootstrap,
                group_id=self.group,
                topics=self._topics,
                max_poll_records=self._batch_size,
                session_timeout_ms=self._session_timeout_ms,
                on_rebalance=self._on_rebalance,
                security=self._security,
            )
            try:
                await consumer.start()
            except KafkaError:
                log.warning("consumer %s cannot reach Kafka yet; retrying", self.group)
                await consumer.stop()
                await self._pause(2.0)
                continue
            self._consumer = consumer
            self.started.set()
            return consumer
        return None

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    async def _process_polled(
        self,
        consumer: AIOKafkaConsumer,
        polled: Mapping[TopicPartition, list[ConsumerRecord[Any, Any]]],
    ) -> None:
        started = time.perf_counter()
        records = [record for batch in polled.values() for record in batch]
        events, poison = self._decode(records)
        handled = await self._apply_with_fallback(events) if events else 0
        # A drain can stop the record-by-record fallback part way: commit up to the first event
        # not handled in each partition, and leave the rest (poison included) to be redelivered.
        resume_at: dict[TopicPartition, int] = {}
        for event in events[handled:]:
            tp = TopicPartition(event.topic, event.partition)
            resume_at[tp] = min(resume_at.get(tp, event.offset), event.offset)
        for record, reason in poison:
            if record.offset < resume_at.get(TopicPartition(record.topic, record.partition), UNSET):
                await self._dead_letter(record, reason)
        crash_point("consumer.after_db_commit")
        offsets = {tp: resume_at.get(tp, batch[-1].offset + 1) for tp, batch in polled.items()}
        self._next_offsets.update(offsets)
        await self._commit(consumer, offsets)
        metrics.CONSUMER_BATCH_SECONDS.labels(self.group).observe(time.perf_counter() - started)

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        """Commit offsets of a batch the DB already holds, even if this task is cancelled
        meanwhile (a drain that ran out of time): otherwise the batch would be left applied but
        uncommitted, to be redelivered and deduplicated."""
        commit = asyncio.ensure_future(consumer.commit(offsets))
        try:
            await asyncio.shield(commit)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(commit, timeout=COMMIT_ON_CANCEL_SECONDS)
            raise
        except (CommitFailedError, IllegalStateError, KafkaConnectionError) as exc:
            # Rebalanced or broker gone: the batch will be redelivered and deduplicated.
            log.warning(
                "offset commit failed for %s (%s); batch will be redelivered",
                self.group,
                type(exc).__name__,
            )

    def _decode(
        self, records: list[ConsumerRecord[Any, Any]]
    ) -> tuple[list[InboundEvent], list[tuple[ConsumerRecord[Any, Any], str]]]:
        events: list[InboundEvent] = []
        poison: list[tuple[ConsumerRecord[Any, Any], str]] = []
        for record in records:
            try:
                events.append(decode_kafka_record(record))
            except PoisonRecordError as exc:
                poison.append((record, str(exc)))
        return events, poison

    async def _apply_with_fallback(self, events: list[InboundEvent]) -> int:
        """Apply the batch; how many of its events (in order) are done, applied or
        dead-lettered. Fewer than all only when a drain stops the record-by-record retry."""
        try:
            await self._retry_transient(lambda: self._apply(events))
            return len(events)
        except Exception:
            log.warning("batch of %d failed in %s; retrying one by one", len(events), self.group)
        for done, event in enumerate(events):
            if self._stopping.is_set() or not await self._apply_one(event):
                log.warning(
                    "%s draining: %d of %d events of the batch done; the rest will be redelivered",
                    self.group,
                    done,
                    len(events),
                )
                return done
        return len(events)

    async def _apply_one(self, event: InboundEvent) -> bool:
        """Apply or dead-letter the event; False if a drain interrupted a transient failure
        (a valid event is never dead-lettered for the database being away)."""
        attempt = 0
        while True:
            try:
                await self._retry_transient(lambda: self._apply([event]))
                return True
            except Exception as exc:
                if self._stopping.is_set() and is_transient(exc):
                    return False
                attempt += 1
                if isinstance(exc, PoisonRecordError) or attempt > self._max_retries:
                    await self._dead_letter_event(event, f"{type(exc).__name__}: {exc}")
                    return True
                await self._pause(self._backoff * 2 ** (attempt - 1))

    async def _retry_transient(self, action: Callable[[], Awaitable[None]]) -> None:
        delay = 0.2
        while True:
            try:
                await action()
                return
            except Exception as exc:
                if not is_transient(exc) or self._stopping.is_set():
                    raise
                log.warning("transient failure in %s (%s); retrying", self.group, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _apply(self, events: Sequence[InboundEvent]) -> None:
        unique = list({event.id: event for event in reversed(events)}.values())[::-1]
        processed = self._tables.processed_events
        async with self._unit_of_work() as uow:
            inserted = await uow.session.scalars(
                _claim_statement(processed),
                {
                    "group": self.group,
                    "ids": [e.id for e in unique],
                    "topics": [e.topic for e in unique],
                },
            )
            new_ids = set(inserted)
            fresh = [e for e in unique if e.id in new_ids]
            with self._process_span(fresh or unique):
                if fresh:
                    await self._handler(uow, fresh)
            await uow.commit()
        self._count(unique, new_ids)

    def _process_span(self, events: Sequence[InboundEvent]) -> trace.Span:
        topics = sorted({e.topic for e in events})
        # One link per trace: a bulk import can put hundreds of messages of one trace in a
        # batch, and they must not crowd out (past the span's link limit) the others' traces.
        # Headers are extracted once per distinct set: an import's events share theirs.
        by_trace: dict[int, Link] = {}
        seen: set[tuple[tuple[str, str], ...]] = set()
        for e in events:
            headers = tuple(e.trace_headers.items())
            if headers in seen:
                continue
            seen.add(headers)
            link = span_link(e.trace_headers)
            if link is not None:
                by_trace.setdefault(link.context.trace_id, link)
        links = list(by_trace.values())
        # Parent: the first message, so a single event reads as one causal chain;
        # links: every message of the batch (OpenTelemetry messaging conventions).
        return self._tracer.start_as_current_span(  # type: ignore[return-value]
            f"process {topics[0]}" if len(topics) == 1 else "process",
            context=context_from_headers(events[0].trace_headers),
            kind=SpanKind.CONSUMER,
            links=links[:128],
            attributes=consumer_span_attributes(
                topic=",".join(topics), group=self.group, count=len(events)
            ),
        )

    def _count(self, events: Sequence[InboundEvent], new_ids: set[Any]) -> None:
        counts = Counter((e.topic, "applied" if e.id in new_ids else "duplicate") for e in events)
        for (topic, outcome), n in counts.items():
            metrics.CONSUMER_EVENTS.labels(self.group, topic, outcome).inc(n)

    async def _dead_letter_event(self, event: InboundEvent, reason: str) -> None:
        await self._send_dead_letter(
            topic=event.topic,
            partition=event.partition,
            offset=event.offset,
            key=event.key.encode() if event.key else None,
            value=None,
            reason=reason,
            event=event,
        )

    async def _dead_letter(self, record: ConsumerRecord[Any, Any], reason: str) -> None:
        await self._send_dead_letter(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            reason=reason,
            original_headers=list(record.headers),
        )

    async def _send_dead_letter(
        self,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        reason: str,
        event: InboundEvent | None = None,
        original_headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        if event is not None:
            value = event.value
            original_headers = [
                ("ce_specversion", b"1.0"),
                ("ce_id", str(event.id).encode()),
                ("ce_type", event.type.encode()),
                ("ce_source", event.source.encode()),
                ("content-type", b"application/json"),
                *[(k, v.encode()) for k, v in event.trace_headers.items()],
            ]
            if event.subject:
                original_headers.append(("ce_subject", event.subject.encode()))
        headers = [
            *(original_headers or []),
            ("dlt_original_topic", topic.encode()),
            ("dlt_original_partition", str(partition).encode()),
            ("dlt_original_offset", str(offset).encode()),
            ("dlt_group", self.group.encode()),
            ("dlt_reason", reason[:1000].encode()),
        ]
        dlt = dead_letter_topic(topic, self.group)
        await self._retry_transient(
            lambda: self._send_and_wait(dlt, key=key, value=value, headers=headers)
        )
        metrics.DEAD_LETTERS.labels(self.group, topic).inc()
        log.error("dead-lettered %s@%d:%d to %s: %s", topic, partition, offset, dlt, reason)

    async def _send_and_wait(
        self,
        topic: str,
        *,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
    ) -> None:
        await self._producer.send_and_wait(topic, value=value, key=key, headers=headers)


@functools.cache
def _claim_statement(processed: Table) -> TextClause:
    """Dedupe records of a batch in one statement over two arrays: a multi-row VALUES bound
    three parameters a row (15,000 for a batch of 5,000, near asyncpg's 32,767 limit) and was
    compiled again for every batch size."""
    return text(
        f'INSERT INTO "{processed.schema}".{processed.name} (consumer_group, event_id, topic)'  # noqa: S608 - our own table, values bound
        " SELECT :group, event_id, topic"
        " FROM unnest(CAST(:ids AS uuid[]), CAST(:topics AS text[])) AS e(event_id, topic)"
        " ON CONFLICT DO NOTHING RETURNING event_id"
    )
