"""The changelog relay: every score version written to `score_history` goes to the score
topics (`score-updated`, and mirrored to the compacted `score-latest`), in `seq` order, at
least once.

The publisher writes each score once, to its row and its history row, and the relay reads the
history in order from a single stored position (`adapters.changelog`): no outbox row to write,
read and mark per score. A version sent again after a crash carries the same event id (a hash
of its key and version), so consumers dedupe it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from uuid import UUID

import orjson
from aiokafka import AIOKafkaProducer
from sqlalchemy.ext.asyncio import AsyncSession

from common import metrics
from common.contracts.scoring import ScoreUpdated
from common.db import dump_json
from common.envelope import (
    CloudEventHeaders,
    Mirror,
    derived_event_id,
    kafka_headers,
    stable_event_id,
)
from common.faults import crash_point
from common.relay import FATAL_PRODUCER_ERRORS, Record, count_sent, send_records
from common.runtime import ServiceRuntime
from scoring import adapters
from scoring.adapters import ChangelogRow
from scoring.domain import SubjectPeriod
from scoring.use_cases import SOURCE, score_payload

log = logging.getLogger(__name__)
BACKLOG_LABEL = "scoring-changelog"  # its own series of `cdt_outbox_backlog`
RenewProducer = Callable[[], Awaitable[AIOKafkaProducer]]


def score_event_id(row: ChangelogRow) -> UUID:
    name = f"{row.subject_type}:{row.subject_id}:{row.period}|{row.criteria_set}|{row.version}"
    return stable_event_id(name, at=row.computed_at)


def score_payload_of(row: ChangelogRow) -> bytes:
    """The `ScoreUpdated` payload of one version (its JSON documents embedded as stored)."""
    payload = score_payload(
        key=SubjectPeriod(row.subject_type, row.subject_id, row.period),
        criteria_set=row.criteria_set,
        score=row.score,
        max_score=row.max_score,
        components=orjson.Fragment(row.components),
        indicators=orjson.Fragment(row.indicators),
        rank=(row.rank, row.rank_of) if row.rank is not None and row.rank_of is not None else None,
        version=row.version,
        as_of=row.as_of_event_time,
        computed_at=row.computed_at,
    )
    return dump_json(payload).encode()


class _PassHeaders:
    """The encoded `ce_*` headers a pass's versions share, on the score topic and on each
    mirror (a pass's versions share their `computed_at`)."""

    def __init__(self, computed_at: datetime, mirrors: Sequence[Mirror]) -> None:
        def shared(type_: str, dataschema: str) -> list[tuple[str, bytes]]:
            headers = CloudEventHeaders(
                type=type_, source=SOURCE, time=computed_at, dataschema=dataschema
            ).for_event("")
            del headers["ce_id"]
            return kafka_headers(headers)

        self.score = shared(ScoreUpdated.CE_TYPE, ScoreUpdated.dataschema())
        self.mirrors = [(mirror, shared(mirror.type, mirror.dataschema)) for mirror in mirrors]


def version_records(rows: Sequence[ChangelogRow], *, mirrors: Sequence[Mirror]) -> list[Record]:
    """The records of a batch of versions: each run of versions continuing one trace goes to
    the score topic, then to each mirror (a key's order holds on every topic). A version's
    payload and key are encoded once for all its records."""
    passes: dict[datetime, _PassHeaders] = {}
    records: list[Record] = []
    for traceparent, run in itertools.groupby(rows, key=_traceparent):
        parent = (("traceparent", traceparent),) if traceparent else ()
        copies: list[list[Record]] = [[] for _ in mirrors]
        for row in run:
            headers = passes.get(row.computed_at)
            if headers is None:
                headers = passes[row.computed_at] = _PassHeaders(row.computed_at, mirrors)
            event_id = score_event_id(row)
            own_id = str(event_id)
            subject = ("ce_subject", f"{row.subject_type}:{row.subject_id}".encode())
            key = f"{row.subject_type}:{row.subject_id}:{row.period}".encode()
            value = score_payload_of(row)
            records.append(
                Record(
                    topic=ScoreUpdated.TOPIC.name,
                    key=key,
                    value=value,
                    headers=[("ce_id", own_id.encode()), *headers.score, subject],
                    parent=parent,
                    event_id=own_id,
                )
            )
            for copy, (mirror, shared) in zip(copies, headers.mirrors, strict=True):
                mirror_id = str(derived_event_id(event_id, scope=mirror.topic))
                copy.append(
                    Record(
                        topic=mirror.topic,
                        key=key,
                        value=value,
                        headers=[("ce_id", mirror_id.encode()), *shared, subject],
                        parent=parent,
                        event_id=mirror_id,
                    )
                )
        for copy in copies:
            records.extend(copy)
    return records


def _traceparent(row: ChangelogRow) -> str | None:
    return row.traceparent


class ScoreChangelogRelay:
    """Background task: send what the changelog holds beyond the published position, then
    move the position, in one transaction holding the relay's lock (one relay at a time)."""

    def __init__(
        self,
        runtime: ServiceRuntime,
        *,
        mirrors: Sequence[Mirror],
        renew_producer: RenewProducer,
        batch_size: int = 2000,
        poll_seconds: float = 0.25,
    ) -> None:
        self._runtime = runtime
        self._mirrors = list(mirrors)
        self._renew_producer = renew_producer
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._outbox_checked = False
        self._metric_at = 0.0
        self._caught_up = asyncio.Event()
        self._caught_up.set()

    async def caught_up(self) -> None:
        """Returns once a batch was not full: the publisher holds back while one was."""
        await self._caught_up.wait()

    def wake(self) -> None:
        """New versions were committed (the publisher, in this process)."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._caught_up.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                published = await self.publish_batch()
            except Exception as exc:
                log.exception("score changelog relay batch failed; retrying")
                published = 0
                if isinstance(exc, FATAL_PRODUCER_ERRORS):
                    await self._renew()
            if published >= self._batch_size:
                self._caught_up.clear()  # more waits: straight on, the publisher holding back
            else:
                self._caught_up.set()
                await self._sleep(self._poll_seconds)

    async def publish_batch(self) -> int:
        """Send up to one batch; returns how many versions were sent."""
        producer = self._runtime.producer
        if producer is None:
            return 0
        async with self._runtime.unit_of_work() as uow:
            if not await self._outbox_drained(uow.session):
                return 0
            rows = await adapters.take_unpublished(uow.session, limit=self._batch_size)
            if rows is None:  # another relay holds the changelog
                return 0
            await self._refresh_backlog_metric(uow.session, empty=not rows)
            if not rows:
                return 0
            records = version_records(rows, mirrors=self._mirrors)
            await send_records(producer, self._runtime.tracer, records)
            crash_point("relay.after_send")
            await adapters.mark_published(uow.session, up_to=rows[-1].seq)
            await uow.commit()
        count_sent(self._runtime.settings.service_name, records)
        return len(rows)

    async def _outbox_drained(self, session: AsyncSession) -> bool:
        """Score events written to the outbox before the changelog go first (once drained,
        none is ever written there again)."""
        if not self._outbox_checked:
            self._outbox_checked = not await adapters.scores_left_in_outbox(
                session, topic=ScoreUpdated.TOPIC.name
            )
        return self._outbox_checked

    async def _refresh_backlog_metric(self, session: AsyncSession, *, empty: bool) -> None:
        """At most once a second (a count over the backlog's index range)."""
        if empty:
            metrics.OUTBOX_BACKLOG.labels(BACKLOG_LABEL).set(0)
            return
        if time.monotonic() - self._metric_at < 1.0:
            return
        self._metric_at = time.monotonic()
        backlog = await adapters.unpublished_count(session)
        metrics.OUTBOX_BACKLOG.labels(BACKLOG_LABEL).set(backlog)

    async def _renew(self) -> None:
        try:
            await self._renew_producer()
            log.warning("score changelog relay: producer replaced after a fatal producer error")
        except Exception:
            log.exception("score changelog relay: cannot replace the producer yet")

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        self._wake.clear()
