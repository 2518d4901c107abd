"""An outbox relay wired to fakes, for unit tests of its logic (no database, no broker)."""

from __future__ import annotations

from typing import Any

from opentelemetry.trace import NoOpTracer, Tracer
from sqlalchemy import MetaData

from common.outbox_tables import define_service_tables
from common.relay import OutboxRelay


def unit_relay(*, producer: Any, tracer: Tracer | None = None, **options: Any) -> OutboxRelay:
    return OutboxRelay(
        service="unit",
        engine=None,  # type: ignore[arg-type]
        database_url="postgresql+asyncpg://nobody@127.0.0.1:1/none",
        tables=define_service_tables(MetaData(schema="unit")),
        producer=producer,
        tracer=tracer or NoOpTracer(),
        **options,
    )
