"""How the relay sends: Kafka's keyed partitioning kept, one producer span per trace run."""

from __future__ import annotations

import asyncio
import random
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from uuid_utils.compat import uuid7

from common.envelope import Mirror, derived_event_id
from common.kafka import KeyedBatches, keyed_partitioner, murmur2
from common.relay import mirrors_by_topic, send_rows

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


def test_murmur2_gives_aiokafkas_values_for_every_length() -> None:
    rng = random.Random(11)
    for length in [*range(0, 9), *(rng.randint(9, 120) for _ in range(3_000))]:
        key = rng.randbytes(length)
        assert murmur2(key) == aiokafka_murmur2(key), key


class _Batch:
    """Stands for aiokafka's BatchBuilder: holds `capacity` records, then refuses."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.records: list[tuple[bytes, dict[str, str]]] = []

    def append(self, *, timestamp: None, key: bytes, value: bytes, headers: Any) -> bool:
        if len(self.records) == self.capacity:
            return False
        self.records.append((key, {k: v.decode() for k, v in headers}))
        return True


class _Producer:
    def __init__(
        self, *, partitions: int = 3, capacity: int = 100, failing: int | None = None
    ) -> None:
        self.partitions, self.capacity, self.failing = partitions, capacity, failing
        self.batches: list[tuple[str, int, _Batch]] = []  # in the order they were sent
        self.settled: list[int] = []  # partitions whose delivery finished, failed or not

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.partitions))

    def create_batch(self) -> _Batch:
        return _Batch(self.capacity)

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> Any:
        self.batches.append((topic, partition, batch))
        return asyncio.ensure_future(self._deliver(partition))

    async def _deliver(self, partition: int) -> None:
        await asyncio.sleep(0.01 * (self.partitions - partition))  # the last one settles first
        self.settled.append(partition)
        if partition == self.failing:
            raise KafkaTimeoutError()

    @property
    def sent(self) -> list[tuple[str, bytes, dict[str, str]]]:
        return [(t, key, headers) for t, _, b in self.batches for key, headers in b.records]


async def test_records_go_in_one_batch_per_partition_in_order_to_kafkas_keyed_partition() -> None:
    producer = _Producer(partitions=4, capacity=3)
    batches = KeyedBatches(producer)  # type: ignore[arg-type]
    keys = [f"team-{i % 5}".encode() for i in range(40)]
    for n, key in enumerate(keys):
        await batches.add("t", key=key, value=b"{}", headers=[("n", str(n).encode())])
    await batches.send()

    expected = {key: DefaultPartitioner()(key, [0, 1, 2, 3], [0, 1, 2, 3]) for key in keys}
    per_partition: dict[int, list[int]] = {}
    for _, partition, batch in producer.batches:
        assert 1 <= len(batch.records) <= 3  # a full batch leaves, the next record starts one
        for key, headers in batch.records:
            assert expected[key] == partition
            per_partition.setdefault(partition, []).append(int(headers["n"]))
    # Every record sent once, and each partition's records in the order they were added.
    assert sorted(n for ns in per_partition.values() for n in ns) == list(range(40))
    assert all(ns == sorted(ns) for ns in per_partition.values())


async def test_a_failed_delivery_raises_once_every_batch_has_settled() -> None:
    producer = _Producer(partitions=3, failing=2)
    batches = KeyedBatches(producer)  # type: ignore[arg-type]
    for n in range(30):
        await batches.add("t", key=f"k{n}".encode(), value=b"{}", headers=[])
    with pytest.raises(KafkaTimeoutError):
        await batches.send()
    assert sorted(producer.settled) == [0, 1, 2]  # nothing left pending behind the failure


def _row(seq: int, topic: str, parent: str, *, event_id: Any = None) -> Any:
    event_id = event_id or f"id-{seq}"
    headers = {"ce_id": str(event_id), "traceparent": parent}
    return SimpleNamespace(
        seq=seq, id=event_id, topic=topic, aggregateid=f"k{seq}", payload="{}", headers=headers
    )


async def test_one_producer_span_per_run_of_rows_continuing_one_trace() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    producer = _Producer()
    rows = [
        *(_row(i, "t1", PARENT_A) for i in range(3)),  # one batch request: one span
        _row(3, "t1", PARENT_B),  # another request: its own span, with the message id
        _row(4, "t2", PARENT_B),  # another topic: another span
    ]
    await send_rows(producer, provider.get_tracer("unit"), rows, mirrors={})  # type: ignore[arg-type]

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
    # Every message continues from its group's span, other headers kept.
    by_span = [f"{s.context.span_id:016x}" for s in spans]
    parents_by_id = {h["ce_id"]: h["traceparent"].split("-")[2] for _, _, h in producer.sent}
    assert parents_by_id == {
        **{f"id-{i}": by_span[0] for i in range(3)},
        "id-3": by_span[1],
        "id-4": by_span[2],
    }


async def test_a_mirrored_topic_gets_each_run_of_rows_again_retyped_in_order() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    producer = _Producer(partitions=1)
    mirror = Mirror(source="t1", topic="m1", type="latest", dataschema="urn:latest")
    ids = [uuid7() for _ in range(4)]
    rows = [
        *(_row(i, "t1", PARENT_A, event_id=ids[i]) for i in range(3)),
        _row(3, "t2", PARENT_B, event_id=ids[3]),  # not mirrored
    ]
    await send_rows(
        producer,  # type: ignore[arg-type]
        provider.get_tracer("unit"),
        rows,
        mirrors=mirrors_by_topic([mirror]),
    )

    assert [s.name for s in exporter.get_finished_spans()] == ["send t1", "send m1", "send t2"]
    sent = [(topic, key, h["ce_id"], h.get("ce_type")) for topic, key, h in producer.sent]
    assert sent == [
        *(("t1", f"k{i}".encode(), str(ids[i]), None) for i in range(3)),
        *(
            ("m1", f"k{i}".encode(), str(derived_event_id(ids[i], scope="m1")), "latest")
            for i in range(3)
        ),
        ("t2", b"k3", str(ids[3]), None),
    ]
