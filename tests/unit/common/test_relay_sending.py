"""How the relay sends: Kafka's keyed partitioning kept, one producer span per trace run."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

from aiokafka.partitioner import DefaultPartitioner
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from common.kafka import keyed_partitioner
from tests.unit.common.relays import unit_relay

PARENT_A = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
PARENT_B = "00-1bf7651916cd43dd8448eb211c80319c-c7ad6b7169203331-01"


def test_cached_partitioner_places_keys_as_kafkas_default_does() -> None:
    rng = random.Random(7)
    partitions = list(range(12))
    for _ in range(2_000):
        key = rng.randbytes(rng.randint(1, 40))
        expected = DefaultPartitioner()(key, partitions, partitions)
        assert keyed_partitioner(key, partitions, partitions) == expected
        assert keyed_partitioner(key, partitions, partitions) == expected  # from the cache


class _Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, dict[str, str]]] = []

    async def send(self, topic: str, *, value: bytes, key: bytes, headers: Any) -> Any:
        self.sent.append((topic, key, {k: v.decode() for k, v in headers}))
        return _done()


async def _done() -> None:
    return None


def _row(seq: int, topic: str, parent: str) -> Any:
    headers = {"ce_id": f"id-{seq}", "traceparent": parent}
    return SimpleNamespace(
        seq=seq, id=f"id-{seq}", topic=topic, aggregateid=f"k{seq}", payload="{}", headers=headers
    )


async def test_one_producer_span_per_run_of_rows_continuing_one_trace() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    producer = _Producer()
    relay = unit_relay(producer=producer, tracer=provider.get_tracer("unit"))
    rows = [
        *(_row(i, "t1", PARENT_A) for i in range(3)),  # one batch request: one span
        _row(3, "t1", PARENT_B),  # another request: its own span, with the message id
        _row(4, "t2", PARENT_B),  # another topic: another span
    ]
    await relay._send_all(rows)

    spans = exporter.get_finished_spans()
    assert [(s.name, s.attributes.get("messaging.batch.message_count")) for s in spans] == [
        ("send t1", 3),
        ("send t1", None),
        ("send t2", None),
    ]
    assert spans[1].attributes["messaging.message.id"] == "id-3"
    assert [s.parent.trace_id for s in spans if s.parent] == [
        int(PARENT_A.split("-")[1], 16),
        int(PARENT_B.split("-")[1], 16),
        int(PARENT_B.split("-")[1], 16),
    ]
    # Every message continues from its group's span, in outbox order, other headers kept.
    by_span = [f"{s.context.span_id:016x}" for s in spans]
    sent_parents = [headers["traceparent"].split("-")[2] for _, _, headers in producer.sent]
    assert sent_parents == [by_span[0]] * 3 + [by_span[1], by_span[2]]
    assert [headers["ce_id"] for _, _, headers in producer.sent] == [f"id-{i}" for i in range(5)]
