"""Consumer lag as the broker sees it: end offset minus the group's committed offset.

Measured from outside the consumer, so lag keeps rising while a consumer is stopped or stuck
(a consumer reporting its own lag goes silent exactly when it matters).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from common import metrics
from common.kafka import kafka_client_options
from common.settings import KafkaSettings

log = logging.getLogger(__name__)


class LagMonitor:
    def __init__(
        self,
        *,
        bootstrap_servers: str,
        groups: dict[str, Sequence[str]],
        interval: float = 5.0,
        security: KafkaSettings | None = None,
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._security = security
        self._groups = groups
        self._interval = interval
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        options = kafka_client_options(self._security)
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self._bootstrap, client_id="cdt-lag", **options
        )
        offsets = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap, client_id="cdt-lag", **options
        )
        await admin.start()
        await offsets.start()
        try:
            while not self._stopping.is_set():
                try:
                    await self.measure(admin, offsets)
                except (KafkaError, OSError, TimeoutError) as exc:
                    log.debug("lag measurement failed: %s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=self._interval)
        finally:
            await offsets.stop()
            await admin.close()

    async def measure(self, admin: AIOKafkaAdminClient, offsets: AIOKafkaConsumer) -> None:
        for group, topics in self._groups.items():
            partitions = await _partitions(admin, topics)
            if not partitions:
                continue
            ends = await offsets.end_offsets(partitions)
            starts = await offsets.beginning_offsets(partitions)
            committed = await admin.list_consumer_group_offsets(group)
            for tp in partitions:
                meta = committed.get(tp)
                position = meta.offset if meta is not None and meta.offset >= 0 else starts[tp]
                metrics.CONSUMER_LAG.labels(group, tp.topic, str(tp.partition)).set(
                    max(ends[tp] - position, 0)
                )


async def _partitions(admin: AIOKafkaAdminClient, topics: Sequence[str]) -> list[TopicPartition]:
    described = await admin.describe_topics(list(topics))
    return [
        TopicPartition(topic["topic"], partition["partition"])
        for topic in described
        if topic.get("error_code", 0) == 0
        for partition in sorted(topic["partitions"], key=lambda p: p["partition"])
    ]
