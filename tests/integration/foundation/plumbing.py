"""A scratch service for testing libs/common's outbox, relay and consumer runner.

Its handler has a deliberately non-idempotent effect (one `applied` row per application), so
any double processing shows up as a duplicate row.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, func, insert
from sqlalchemy.dialects.postgresql import UUID as PgUUID
from sqlalchemy.ext.asyncio import AsyncEngine

from common.db import UnitOfWork
from common.envelope import SCHEMA_BASE_URL, EventContract, InboundEvent, Mirror
from common.outbox_tables import define_service_tables
from common.runtime import ConsumerSpec, ServiceRuntime
from common.settings import ServiceSettings
from common.topics import TopicSpec, dead_letter_topic

SCHEMA = "plumbing"
metadata = MetaData(schema=SCHEMA)
tables = define_service_tables(metadata)
applied = Table(
    "applied",
    metadata,
    Column("event_id", PgUUID(as_uuid=True), nullable=False),
    Column("key", String(100), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("group_name", String(100), nullable=False),
    Column("at", DateTime(timezone=True), server_default=func.now()),
)


def topic_spec(name: str) -> TopicSpec:
    return TopicSpec(f"plumbing.{name}.v1", partitions=3)


def dlt_spec(name: str, group: str) -> TopicSpec:
    return TopicSpec(dead_letter_topic(topic_spec(name).name, group), partitions=1)


class PlumbingEvent(EventContract):
    TOPIC: ClassVar = topic_spec("events")
    CE_TYPE: ClassVar = "vn.cdt.test.plumbing.v1"
    AGGREGATE: ClassVar = "plumbing"

    key: str
    seq: int
    poison: bool = False

    def event_key(self) -> str:
        return self.key


MIRRORED_TYPE = "vn.cdt.test.plumbing-mirrored.v1"


def make_handler(group: str, *, slow: float = 0.0):  # type: ignore[no-untyped-def]
    async def handle(uow: UnitOfWork, events: Sequence[InboundEvent]) -> None:
        rows = []
        for event in events:
            payload = event.parse(PlumbingEvent)
            if payload.poison and not os.environ.get("PLUMBING_POISON_FIXED"):
                raise ValueError(f"poisoned payload seq={payload.seq}")
            rows.append(
                {"event_id": event.id, "key": payload.key, "seq": payload.seq, "group_name": group}
            )
        await asyncio.sleep(slow)  # a handler slow enough to be caught mid-batch by a drain
        await uow.session.execute(insert(applied), rows)

    return handle


def build_runtime(
    *,
    topic: str,
    group: str,
    with_consumer: bool = True,
    lag_interval: float = 5.0,
    slow: float = 0.0,
    mirror: str | None = None,
    **settings: object,
) -> ServiceRuntime:
    """`mirror`: a topic name (as `topic`) the relay also sends every row of `topic` to."""
    config = ServiceSettings(
        service_name=SCHEMA,
        CDT_RUN_MIGRATIONS=False,
        CDT_LAG_INTERVAL_SECONDS=lag_interval,
        **settings,  # type: ignore[arg-type]
    )
    consumers = (
        [
            ConsumerSpec(
                group=group, topics=[topic_spec(topic).name], handler=make_handler(group, slow=slow)
            )
        ]
        if with_consumer
        else []
    )
    mirrors = [
        Mirror(
            source=topic_spec(topic).name,
            topic=topic_spec(mirror).name,
            type=MIRRORED_TYPE,
            dataschema=f"{SCHEMA_BASE_URL}/schemas/{MIRRORED_TYPE}.json",
        )
        for _ in [mirror]
        if mirror
    ]
    return ServiceRuntime(
        settings=config,
        tables=tables,
        migrations_dir=Path("/nonexistent"),
        consumers=consumers,
        mirrors=mirrors,
    )


async def create_schema(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        await conn.run_sync(metadata.create_all)


if __name__ == "__main__":
    # `python -m tests.integration.foundation.plumbing`: a worker process for kill tests.
    from common.main import run_worker

    runtime = build_runtime(
        topic=os.environ["PLUMBING_TOPIC"],
        group=os.environ["PLUMBING_GROUP"],
        mirror=os.environ.get("PLUMBING_MIRROR"),
    )
    asyncio.run(run_worker(runtime))
