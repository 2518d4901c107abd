"""Test doubles that are real: a Kafka producer standing in for the other services, a local
HTTP receiver for webhooks (asyncio streams, no framework) and a clock tests move by hand."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from sqlalchemy import func, select

from common.contracts.activities import ActivityRecorded
from common.contracts.scoring import ScoreComponent, ScoreUpdated
from common.contracts.teams import TeamChanged, UnitPath
from common.envelope import EventContract, OutboundEvent, kafka_headers
from common.kafka import kafka_client_options


class MutableClock:
    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def new_code() -> str:
    """A province code no other test uses, so rules and inbox queries stay isolated."""
    return f"9{uuid.uuid4().hex[:7]}"


class Events:
    """Publishes contracts the way the other services' relays do (CloudEvents binary mode)."""

    def __init__(self, bootstrap: str) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", **kafka_client_options()
        )
        self.sent: set[uuid.UUID] = set()

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def send(self, contract: EventContract, *, source: str = "/cdt/test") -> OutboundEvent:
        event = OutboundEvent.of(contract, source=source)
        await self.resend(event)
        return event

    async def resend(self, event: OutboundEvent) -> None:
        """Redeliver exactly the same event (same ce_id)."""
        self.sent.add(event.id)
        await self._producer.send_and_wait(
            event.topic,
            key=event.key.encode(),
            value=json.dumps(event.data).encode(),
            headers=kafka_headers(event.ce_headers()),
        )


def team(province: str, *, commune: str | None = None, established_on: Any = None) -> TeamChanged:
    team_id = uuid.uuid4()
    return TeamChanged(
        id=team_id,
        code=f"T-{team_id.hex[:8]}",
        name="Tổ CNSCĐ",
        unit_code=commune or province,
        unit_path=UnitPath(province=province, commune=commune),
        status="active",
        established_on=established_on,
        version=1,
        changed_at=datetime.now(UTC),
    )


def activity(
    *,
    team_id: uuid.UUID,
    province: str,
    commune: str | None = None,
    member_id: uuid.UUID | None = None,
    occurred_at: datetime | None = None,
    recorded_at: datetime | None = None,
    household_hash: str | None = None,
    kind: str = "household_visit",
) -> ActivityRecorded:
    recorded = recorded_at or datetime.now(UTC)
    return ActivityRecorded(
        id=uuid.uuid4(),
        team_id=team_id,
        member_id=member_id,
        occurred_at=occurred_at or recorded - timedelta(minutes=5),
        recorded_at=recorded,
        kind=kind,  # type: ignore[arg-type]
        household_hash=household_hash,
        unit_path=UnitPath(province=province, commune=commune),
    )


def score(
    *,
    subject_id: str,
    version: int,
    value: float,
    subject_type: str = "province",
    period: str = "2026-11",
    components: list[ScoreComponent] | None = None,
    indicators: dict[str, float] | None = None,
    computed_at: datetime | None = None,
) -> ScoreUpdated:
    return ScoreUpdated(
        subject_type=subject_type,  # type: ignore[arg-type]
        subject_id=subject_id,
        period=period,
        criteria_set="default@1",
        score=value,
        components=components or [],
        indicators=indicators or {},
        version=version,
        computed_at=computed_at or datetime.now(UTC),
    )


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """A minimal HTTP/1.1 server on 127.0.0.1:<free port>. `respond(n)` (n = 1-based request
    count) returns the status to answer, and may sleep first to play a slow receiver."""

    respond: Callable[[int], Awaitable[int]]
    requests: list[Received] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hook"

    async def __aenter__(self) -> Receiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")[1:]
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in lines if line)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append(Received(headers=headers, body=body, at=time.monotonic()))
            self.arrived.set()
            status = await self.respond(len(self.requests))
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def answer(*statuses: int, then: int = 200) -> Callable[[int], Awaitable[int]]:
    async def respond(n: int) -> int:
        return statuses[n - 1] if n <= len(statuses) else then

    return respond


async def consumed(runtime: Any, event_ids: set[uuid.UUID]) -> bool:
    """True once the notifications consumer has committed every one of these events."""
    processed = runtime.tables.processed_events
    async with runtime.sessions() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(processed)
            .where(
                processed.c.consumer_group == "notifications",
                processed.c.event_id.in_(list(event_ids)),
            )
        )
    return count == len(event_ids)
