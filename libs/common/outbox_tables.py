"""The outbox, processed-events and audit tables every service has in its own schema.

Columns follow Debezium's outbox convention so a CDC connector could replace our relay.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    MetaData,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSON, UUID


@dataclass(frozen=True)
class ServiceTables:
    outbox: Table
    processed_events: Table
    audit_log: Table

    @property
    def notify_channel(self) -> str:
        return f"{self.outbox.schema}_outbox"


def define_service_tables(metadata: MetaData) -> ServiceTables:
    outbox = Table(
        "outbox",
        metadata,
        # `seq` orders publication; `id` is the CloudEvent id (UUIDv7), the consumers' dedupe key.
        Column("seq", BigInteger, Identity(always=True), primary_key=True),
        Column("id", UUID(as_uuid=True), nullable=False, unique=True),
        Column("aggregatetype", String(64), nullable=False),
        Column("aggregateid", String(200), nullable=False),
        Column("type", String(200), nullable=False),
        Column("topic", String(200), nullable=False),
        # `json`, not `jsonb`: written once, read once, sent as it is. PostgreSQL keeps the text
        # (no binary parse on insert, no re-serialization on read): half the cost per row.
        Column("payload", JSON, nullable=False),
        Column("headers", JSON, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("published_at", DateTime(timezone=True)),
        Index("ix_outbox_unpublished", "seq", postgresql_where=text("published_at IS NULL")),
    )
    processed = Table(
        "processed_events",
        metadata,
        Column("consumer_group", String(100), primary_key=True),
        Column("event_id", UUID(as_uuid=True), primary_key=True),
        Column("topic", Text, nullable=False),
        Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )
    audit_log = Table(
        "audit_log",
        metadata,
        # Append-only (a trigger refuses UPDATE and DELETE): `common.audit`.
        Column("seq", BigInteger, Identity(always=True), primary_key=True),
        Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("actor_subject", String(200), nullable=False),
        Column("actor_role", String(40), nullable=False),
        Column("actor_unit", String(40)),
        Column("action", String(300), nullable=False),
        Column("resource", String(1000), nullable=False),
        Column("outcome", String(40), nullable=False),
        Column("request_id", String(64), nullable=False),
        Column("trace_id", String(32)),
        Index("ix_audit_log_actor", "actor_subject", "seq"),
    )
    return ServiceTables(outbox=outbox, processed_events=processed, audit_log=audit_log)
