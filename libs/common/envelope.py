"""CloudEvents 1.0 in Kafka *binary* mode: attributes as `ce_*` headers, the value is JSON data.

`OutboundEvent` is what a unit of work stores in the outbox; `InboundEvent` is what a consumer
handler receives. Pydantic contracts (`common.contracts`) are the single source of truth for the
data; this module only moves them.
"""

from __future__ import annotations

import builtins
import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, ClassVar, Protocol, TypeVar
from uuid import UUID

import orjson
import uuid_utils
from pydantic import BaseModel, ConfigDict
from uuid_utils.compat import uuid7

from common.topics import TopicSpec

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"
TRACE_HEADERS = ("traceparent", "tracestate")
# The public address of a service of this platform: `ce_dataschema` points under it. Read once
# (it is in every event's headers); production sets it to the gateway agencies reach.
SCHEMA_BASE_URL = os.environ.get("CDT_SCHEMA_BASE_URL", "http://localhost:8001").rstrip("/")

C = TypeVar("C", bound="EventContract")


class PoisonRecordError(ValueError):
    """A record that can never be processed as it is (not a CloudEvent, bad JSON, bad data)."""


class EventContract(BaseModel):
    """Payload of one event type. Readers ignore unknown fields so producers can add some."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    TOPIC: ClassVar[TopicSpec]
    CE_TYPE: ClassVar[str]
    AGGREGATE: ClassVar[str]

    def event_key(self) -> str:
        """Kafka key and outbox aggregate id; subclasses override where it is not `id`."""
        return str(getattr(self, "id"))  # noqa: B009 - contracts declare `id` themselves

    @classmethod
    def dataschema(cls) -> str:
        """Where the event type's JSON Schema is served (every service serves them all)."""
        return f"{SCHEMA_BASE_URL}/schemas/{cls.CE_TYPE}.json"


@dataclass(frozen=True)
class OutboundEvent:
    topic: str
    key: str
    type: str
    source: str
    aggregate_type: str
    data: dict[str, Any]
    dataschema: str
    subject: str | None = None
    id: UUID = field(default_factory=uuid7)
    time: datetime = field(default_factory=lambda: datetime.now(UTC))

    @classmethod
    def of(
        cls, contract: EventContract, *, source: str, subject: str | None = None
    ) -> OutboundEvent:
        return cls(
            topic=contract.TOPIC.name,
            key=contract.event_key(),
            type=contract.CE_TYPE,
            source=source,
            aggregate_type=contract.AGGREGATE,
            data=contract.model_dump(mode="json"),
            dataschema=contract.dataschema(),
            subject=subject,
        )

    @classmethod
    def of_payload(
        cls,
        contract: builtins.type[EventContract],  # `type` is a field name here
        data: dict[str, Any],
        *,
        key: str,
        source: str,
        subject: str | None = None,
        time: datetime | None = None,
    ) -> OutboundEvent:
        """An event from a payload already shaped like `contract` (hot paths skip pydantic;
        a unit test validates the shape against the contract). `time`: one instant for the
        many events of one pass, so they share their `ce_*` headers."""
        return cls(
            topic=contract.TOPIC.name,
            key=key,
            type=contract.CE_TYPE,
            source=source,
            aggregate_type=contract.AGGREGATE,
            data=data,
            dataschema=contract.dataschema(),
            subject=subject,
            time=time or datetime.now(UTC),
        )

    def shared_headers(self) -> CloudEventHeaders:
        """The headers this event shares with every event of its type, source and time."""
        return CloudEventHeaders(
            type=self.type, source=self.source, time=self.time, dataschema=self.dataschema
        )

    def ce_headers(self, shared: CloudEventHeaders | None = None) -> dict[str, str]:
        """`shared`: this event's `shared_headers()`, built once for many events."""
        return (shared or self.shared_headers()).for_event(str(self.id), subject=self.subject)


class CloudEventHeaders:
    """The `ce_*` headers shared by events of one type, source and time, spelt once: the events
    of a 1,000-item batch differ only by id and subject. `extra` joins every event's headers
    (a request's trace context)."""

    def __init__(
        self,
        *,
        type: str,
        source: str,
        time: datetime,
        dataschema: str,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        self._shared = {
            "ce_specversion": SPEC_VERSION,
            "ce_type": type,
            "ce_source": source,
            "ce_time": time.isoformat(),
            "ce_dataschema": dataschema,
            "content-type": CONTENT_TYPE,
            **(extra or {}),
        }

    def for_event(self, event_id: str, *, subject: str | None = None) -> dict[str, str]:
        headers = {"ce_id": event_id, **self._shared}
        if subject is not None:
            headers["ce_subject"] = subject
        return headers


_TIME_AND_VERSION = ((1 << 48) - 1) << 80 | 0xF << 76  # unix_ts_ms and ver of a UUIDv7
_VARIANT = 0b10 << 62


def derived_event_id(event_id: UUID, *, scope: str) -> UUID:
    """A second event id for the same event published elsewhere (`scope`: the topic), the same
    on every redelivery so consumers dedupe it. It stays a UUIDv7 of the same millisecond: the
    random bits come from a hash, so dedupe records of it age out like any other."""
    digest = int.from_bytes(
        hashlib.blake2b(f"{event_id}|{scope}".encode(), digest_size=16).digest()
    )
    rand_a = digest >> 116 << 64  # 12 bits after the version
    rand_b = digest & ((1 << 62) - 1)
    return UUID(int=(event_id.int & _TIME_AND_VERSION) | rand_a | _VARIANT | rand_b)


def stable_event_id(name: str, *, at: datetime) -> UUID:
    """A UUIDv7 of `at`'s millisecond whose random bits hash `name` (what the event is, e.g. a
    key and its version): sent again, the event has the same id, so consumers dedupe it, and
    its dedupe record ages out like any other."""
    millis = int(at.timestamp() * 1000)
    digest = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=16).digest())
    rand_a = digest >> 116 << 64  # 12 bits after the version
    rand_b = digest & ((1 << 62) - 1)
    return UUID(int=millis << 80 | 0x7 << 76 | rand_a | _VARIANT | rand_b)


@dataclass(frozen=True)
class Mirror:
    """Every outbox row for `source` is also sent, by the relay, to `topic` as an event of
    another type with the same key and data (a compacted "latest" topic next to a history
    topic): one outbox row instead of two for what is one fact."""

    source: str
    topic: str
    type: str
    dataschema: str

    @classmethod
    def of(
        cls, source: builtins.type[EventContract], mirror: builtins.type[EventContract]
    ) -> Mirror:
        return cls(
            source=source.TOPIC.name,
            topic=mirror.TOPIC.name,
            type=mirror.CE_TYPE,
            dataschema=mirror.dataschema(),
        )

    def headers(self, event_id: UUID, headers: Mapping[str, str]) -> tuple[UUID, dict[str, str]]:
        """The mirrored event's id and headers (the source's, retyped, with a derived id)."""
        mirrored_id = derived_event_id(event_id, scope=self.topic)
        return mirrored_id, {
            **headers,
            "ce_id": str(mirrored_id),
            "ce_type": self.type,
            "ce_dataschema": self.dataschema,
        }


def new_event_id() -> str:
    """A UUIDv7 event id, as text: what hot paths store and send (8x cheaper than a
    `uuid.UUID` built and then spelt)."""
    return str(uuid_utils.uuid7())


def kafka_headers(headers: Mapping[str, str]) -> list[tuple[str, bytes]]:
    return [(name, value.encode()) for name, value in headers.items()]


@dataclass(frozen=True)
class InboundEvent:
    id: UUID
    type: str
    source: str
    subject: str | None
    time: datetime | None
    topic: str
    partition: int
    offset: int
    key: str | None
    # The record's JSON as it came: decoded on first use of `data`, or straight into a typed
    # struct by `contracts.wire.parse_wire` (then never into a dict: half the cost).
    value: bytes
    trace_headers: dict[str, str]

    @cached_property
    def data(self) -> dict[str, Any]:
        """The JSON object the record carries; PoisonRecordError if it carries none."""
        where = f"{self.topic}@{self.partition}:{self.offset}"
        try:
            data = orjson.loads(self.value)
        except ValueError as exc:
            raise PoisonRecordError(f"{where} value is not JSON") from exc
        if not isinstance(data, dict):
            raise PoisonRecordError(f"{where} value is not a JSON object")
        return data

    def parse(self, contract: builtins.type[C]) -> C:
        try:
            return contract.model_validate(self.data)
        except ValueError as exc:
            raise PoisonRecordError(f"{self.type} {self.id}: invalid data: {exc}") from exc


def decode_record(
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]],
) -> InboundEvent:
    attrs = {name: raw.decode("utf-8", "replace") for name, raw in headers}
    try:
        event_id = UUID(attrs["ce_id"])
        ce_type = attrs["ce_type"]
    except (KeyError, ValueError) as exc:
        raise PoisonRecordError(f"{topic}@{partition}:{offset} is not a CloudEvent") from exc
    if value is None:
        raise PoisonRecordError(f"{topic}@{partition}:{offset} has no value")
    return InboundEvent(
        id=event_id,
        type=ce_type,
        source=attrs.get("ce_source", ""),
        subject=attrs.get("ce_subject"),
        time=_parse_time(attrs.get("ce_time")),
        topic=topic,
        partition=partition,
        offset=offset,
        key=key.decode("utf-8", "replace") if key is not None else None,
        value=value,
        trace_headers={k: attrs[k] for k in TRACE_HEADERS if k in attrs},
    )


class KafkaRecord(Protocol):
    """What `decode_kafka_record` reads of a record (aiokafka's `ConsumerRecord`)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


def decode_kafka_record(record: KafkaRecord) -> InboundEvent:
    """`decode_record` of a record as the Kafka client delivers it."""
    return decode_record(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
        headers=record.headers,
    )


def _parse_time(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        return datetime.fromisoformat(raw)
    except ValueError:
        return None
