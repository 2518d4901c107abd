"""libs/common's delivery guarantees on real Postgres and Kafka: outbox → relay → consumer,
exactly-once effects under redelivery and crashes, dead letters, ordering per key."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY
from sqlalchemy import func, select, text

from common.envelope import OutboundEvent, derived_event_id, kafka_headers
from common.kafka import ensure_topics
from tests.helpers import committed_offsets, eventually, headers_of, read_topic
from tests.integration.foundation import plumbing
from tests.integration.foundation.plumbing import PlumbingEvent, applied


async def make_topics(infra, name: str, group: str) -> str:  # type: ignore[no-untyped-def]
    await ensure_topics(
        infra.kafka_bootstrap_servers,
        specs=[plumbing.topic_spec(name), plumbing.dlt_spec(name, group)],
    )
    return plumbing.topic_spec(name).name


def event(*, key: str, seq: int, topic: str, poison: bool = False) -> OutboundEvent:
    outbound = OutboundEvent.of(PlumbingEvent(key=key, seq=seq, poison=poison), source="/test")
    return OutboundEvent(**{**outbound.__dict__, "topic": topic})


async def send_raw(producer: AIOKafkaProducer, e: OutboundEvent) -> None:
    await producer.send_and_wait(
        e.topic,
        value=json.dumps(e.data).encode(),
        key=e.key.encode(),
        headers=kafka_headers(e.ce_headers()),
    )


async def applied_counts(engine, group: str) -> dict[object, int]:  # type: ignore[no-untyped-def]
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(applied.c.event_id, func.count())
            .where(applied.c.group_name == group)
            .group_by(applied.c.event_id)
        )
        return {row[0]: row[1] for row in rows}


async def test_redelivered_records_are_applied_exactly_once(engine, producer, infra) -> None:  # type: ignore[no-untyped-def]
    topic = await make_topics(infra, "redelivery", "g-redelivery")
    runtime = plumbing.build_runtime(topic="redelivery", group="g-redelivery")
    events = [event(key=f"k{i % 3}", seq=i, topic=topic) for i in range(30)]
    await runtime.start(workers=True)
    try:
        # Through the real write path: outbox rows committed by a unit of work, relayed.
        async with runtime.unit_of_work() as uow:
            for e in events:
                uow.publish(e)
            await uow.commit()
        # And the same records delivered again, as a relay retry or a replay would.
        for e in events[:10]:
            await send_raw(producer, e)

        async def all_applied() -> bool:
            return len(await applied_counts(engine, "g-redelivery")) == 30

        await eventually(all_applied, what="30 events applied")
        await asyncio.sleep(1.0)  # let the redelivered copies be consumed too
        counts = await applied_counts(engine, "g-redelivery")
        assert set(counts) == {e.id for e in events}
        assert set(counts.values()) == {1}
    finally:
        await runtime.stop()


async def test_a_consumer_knows_its_backlog_from_its_fetches(engine, producer, infra) -> None:  # type: ignore[no-untyped-def]
    """What a service asks before background work (scoring's publisher): records fetched or
    announced by the broker but not handled yet, down to 0 once caught up."""
    topic = await make_topics(infra, "backlog", "g-backlog")
    runtime = plumbing.build_runtime(
        topic="backlog", group="g-backlog", slow=0.3, CDT_CONSUMER_BATCH_SIZE=20
    )
    for i in range(300):
        await send_raw(producer, event(key=f"k{i % 3}", seq=i, topic=topic))
    await runtime.start(workers=True)
    try:
        seen: list[int] = []

        async def behind() -> bool:
            seen.extend(c.backlog() for c in runtime.consumers)
            return any(count > 100 for count in seen)

        await eventually(behind, what="a backlog seen while the slow handler works")

        async def caught_up() -> bool:
            done = len(await applied_counts(engine, "g-backlog")) == 300
            return done and all(c.backlog() == 0 for c in runtime.consumers)

        await eventually(caught_up, timeout=60, what="all applied and no backlog left")
    finally:
        await runtime.stop()


async def test_consumer_killed_after_db_commit_before_offset_commit(
    engine, producer, infra, subprocess_env
) -> None:  # type: ignore[no-untyped-def]
    topic = await make_topics(infra, "crash", "g-crash")
    events = [event(key=f"k{i % 4}", seq=i, topic=topic) for i in range(40)]
    for e in events:
        await send_raw(producer, e)
    env = {**subprocess_env, "PLUMBING_TOPIC": "crash", "PLUMBING_GROUP": "g-crash"}
    worker = [sys.executable, "-m", "tests.integration.foundation.plumbing"]

    crashing = subprocess.run(
        worker,
        env={**env, "CDT_FAULT_POINTS": "consumer.after_db_commit"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert crashing.returncode == 137, crashing.stderr[-2000:]
    assert "crashing at consumer.after_db_commit" in crashing.stderr
    applied_before_restart = await applied_counts(engine, "g-crash")
    assert applied_before_restart, "the DB commit happened before the crash"
    # ...and the offsets did not: the restarted worker gets the same batch again.
    assert await committed_offsets(infra.kafka_bootstrap_servers, "g-crash") == 0

    survivor = subprocess.Popen(worker, env=env, stderr=subprocess.PIPE, text=True)
    try:

        async def all_consumed() -> bool:
            committed = await committed_offsets(infra.kafka_bootstrap_servers, "g-crash")
            return committed == 40

        await eventually(all_consumed, timeout=60, what="the restarted worker to commit 40")
    finally:
        survivor.send_signal(signal.SIGTERM)
        survivor.wait(timeout=30)
    counts = await applied_counts(engine, "g-crash")
    assert set(counts) == {e.id for e in events}
    assert set(counts.values()) == {1}, "a redelivered batch was applied twice"
    assert survivor.returncode == 0


async def test_drain_during_record_by_record_retry_commits_exactly_what_it_applied(
    engine, producer, infra
) -> None:  # type: ignore[no-untyped-def]
    """A poison record sends its batch to the (slow) record-by-record retry; a drain part way
    through must commit the offsets of exactly the records done, leave the rest uncommitted and
    never dead-letter a valid event; the next consumer finishes the batch, nothing twice."""
    topic = await make_topics(infra, "drain", "g-drain")
    poisoned = event(key="one-key", seq=0, topic=topic, poison=True)
    good = [event(key="one-key", seq=i, topic=topic) for i in range(1, 31)]
    for e in [poisoned, *good]:  # one key, one partition, one batch: poison first
        await send_raw(producer, e)
    landed = await read_topic(
        infra.kafka_bootstrap_servers, topic, until=lambda records: len(records) >= 31
    )
    offsets = {headers_of(r)["ce_id"]: r.offset for r in landed}
    runtime = plumbing.build_runtime(topic="drain", group="g-drain", slow=0.2)
    await runtime.start(workers=True)
    try:

        async def some_applied() -> bool:
            return len(await applied_counts(engine, "g-drain")) >= 5

        await eventually(some_applied, what="the retry one by one under way")
    finally:
        await runtime.stop()
    done = await applied_counts(engine, "g-drain")
    committed = await committed_offsets(infra.kafka_bootstrap_servers, "g-drain")
    assert 5 <= len(done) < len(good), "the drain stopped the retry part way"
    below = {e.id for e in good if offsets[str(e.id)] < committed}
    assert below == set(done), "applied records and committed offsets disagree"
    assert committed == offsets[str(good[len(done) - 1].id)] + 1

    runtime = plumbing.build_runtime(topic="drain", group="g-drain")
    await runtime.start(workers=True)
    try:

        async def all_applied() -> bool:
            return len(await applied_counts(engine, "g-drain")) == len(good)

        await eventually(all_applied, what="the rest applied after the restart")
    finally:
        await runtime.stop()
    assert set((await applied_counts(engine, "g-drain")).values()) == {1}
    dead = await read_topic(
        infra.kafka_bootstrap_servers,
        plumbing.dlt_spec("drain", "g-drain").name,
        until=lambda records: len(records) >= 1,
    )
    assert [headers_of(r)["ce_id"] for r in dead] == [str(poisoned.id)]


async def test_poison_records_go_to_the_dead_letter_topic_and_the_rest_carries_on(
    engine, producer, infra
) -> None:  # type: ignore[no-untyped-def]
    topic = await make_topics(infra, "poison", "g-poison")
    runtime = plumbing.build_runtime(topic="poison", group="g-poison")
    good = [event(key="same-key", seq=i, topic=topic) for i in range(5)]
    poisoned = event(key="same-key", seq=99, topic=topic, poison=True)
    await producer.send_and_wait(topic, value=b"not json at all", key=b"same-key")  # no headers
    await send_raw(producer, good[0])
    await send_raw(producer, poisoned)
    # a CloudEvent whose value is no JSON: found when the handler reads it
    unreadable = event(key="same-key", seq=98, topic=topic)
    await producer.send_and_wait(
        topic, value=b"{oops", key=b"same-key", headers=kafka_headers(unreadable.ce_headers())
    )
    for e in good[1:]:
        await send_raw(producer, e)
    dead_before = (
        REGISTRY.get_sample_value("cdt_dead_letters_total", {"group": "g-poison", "topic": topic})
        or 0.0
    )
    await runtime.start(workers=True)
    try:

        async def good_applied() -> bool:
            return len(await applied_counts(engine, "g-poison")) == 5

        await eventually(good_applied, what="the good events applied")
        dead = await read_topic(
            infra.kafka_bootstrap_servers,
            plumbing.dlt_spec("poison", "g-poison").name,
            until=lambda records: len(records) >= 3,
        )
    finally:
        await runtime.stop()
    reasons = sorted(headers_of(r)["dlt_reason"] for r in dead)
    assert any("not a CloudEvent" in r for r in reasons)
    assert any("poisoned payload seq=99" in r for r in reasons)
    assert any("value is not JSON" in r for r in reasons)
    unreadable_copy = next(r for r in dead if headers_of(r)["ce_id"] == str(unreadable.id))
    assert unreadable_copy.value == b"{oops"  # kept as it came
    assert {headers_of(r)["dlt_original_topic"] for r in dead} == {topic}
    poisoned_copy = next(r for r in dead if "seq=99" in headers_of(r)["dlt_reason"])
    assert headers_of(poisoned_copy)["ce_id"] == str(poisoned.id)  # replayable as it was
    assert set((await applied_counts(engine, "g-poison")).values()) == {1}
    dead_after = REGISTRY.get_sample_value(
        "cdt_dead_letters_total", {"group": "g-poison", "topic": topic}
    )
    assert dead_after == dead_before + 3


async def test_relay_stopped_while_writes_continue_then_publishes_all_in_order(
    engine, infra
) -> None:  # type: ignore[no-untyped-def]
    topic = await make_topics(infra, "ordering", "g-ordering")
    writer = plumbing.build_runtime(topic="ordering", group="g-ordering", with_consumer=False)
    await writer.start(workers=False)  # no relay: rows pile up in the outbox
    written = []
    try:
        for seq in range(60):
            async with writer.unit_of_work() as uow:
                e = event(key=f"key-{seq % 3}", seq=seq, topic=topic)
                uow.publish(e)
                await uow.commit()
                written.append(e)
    finally:
        await writer.stop()
    async with engine.connect() as conn:
        backlog = await conn.scalar(
            select(func.count())
            .select_from(plumbing.tables.outbox)
            .where(
                plumbing.tables.outbox.c.published_at.is_(None),
                plumbing.tables.outbox.c.topic == topic,
            )
        )
    assert backlog == 60

    relay = plumbing.build_runtime(topic="ordering", group="g-ordering", with_consumer=False)
    await relay.start(workers=True)
    try:
        records = await read_topic(
            infra.kafka_bootstrap_servers, topic, until=lambda rs: len(rs) >= 60
        )
    finally:
        await relay.stop()
    by_key: dict[str, list[int]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        by_key[record.key.decode()].append(json.loads(record.value)["seq"])
    assert sum(len(v) for v in by_key.values()) == 60
    for key, seqs in by_key.items():
        expected = [e.data["seq"] for e in written if e.key == key]
        assert seqs == expected, f"{key} out of order"


async def test_relay_deletes_rows_published_longer_ago_than_the_retention(engine, infra) -> None:  # type: ignore[no-untyped-def]
    """Published rows are kept for the retention, then deleted; unpublished rows never are."""
    topic = await make_topics(infra, "prune", "g-prune")
    writer = plumbing.build_runtime(topic="prune", group="g-prune", with_consumer=False)
    await writer.start(workers=False)
    try:
        written = []
        for seq in range(3):
            async with writer.unit_of_work() as uow:
                e = event(key="k", seq=seq, topic=topic)
                uow.publish(e)
                await uow.commit()
                written.append(e.id)
    finally:
        await writer.stop()
    old, recent, waiting = written
    outbox = plumbing.tables.outbox
    async with engine.begin() as conn:
        for row_id, published_at in ((old, "now() - interval '8 days'"), (recent, "now()")):
            await conn.execute(
                outbox.update().where(outbox.c.id == row_id).values(published_at=text(published_at))
            )

    async def remaining() -> set[object]:
        async with engine.connect() as conn:
            rows = await conn.execute(select(outbox.c.id).where(outbox.c.id.in_(written)))
            return {r[0] for r in rows}

    relay = plumbing.build_runtime(
        topic="prune", group="g-prune", with_consumer=False, CDT_OUTBOX_RETENTION_HOURS=168
    )
    await relay.start(workers=True)
    try:
        records = await read_topic(infra.kafka_bootstrap_servers, topic, until=lambda rs: rs)
        assert [json.loads(r.value)["seq"] for r in records] == [2], "only the waiting row is sent"
        await eventually(lambda: _is(remaining(), {recent, waiting}), what="old row pruned")
    finally:
        await relay.stop()


def _uuid_at(moment: datetime, *, version: int) -> uuid.UUID:
    """A UUID whose first 48 bits are `moment` (as UUIDv7 lays them out) and of `version`."""
    millis = int(moment.timestamp() * 1000)
    return uuid.UUID(int=millis << 80 | version << 76 | 0b10 << 62 | 12345)


async def test_dedupe_records_older_than_their_retention_are_deleted(engine, infra) -> None:  # type: ignore[no-untyped-def]
    """Old UUIDv7 dedupe records go (their id carries their time); recent ones and ids without
    a time stay, so no redelivery within the retention can be applied twice."""
    await make_topics(infra, "dedupe", "g-dedupe")
    long_ago = datetime.now(UTC) - timedelta(days=10)
    old, recent, timeless = (
        _uuid_at(long_ago, version=7),
        _uuid_at(datetime.now(UTC), version=7),
        _uuid_at(long_ago, version=4),
    )
    processed = plumbing.tables.processed_events
    async with engine.begin() as conn:
        await conn.execute(
            processed.insert(),
            [
                {"consumer_group": "g-dedupe", "event_id": i, "topic": "t"}
                for i in (old, recent, timeless)
            ],
        )

    async def kept() -> set[object]:
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(processed.c.event_id).where(processed.c.consumer_group == "g-dedupe")
            )
            return {r[0] for r in rows}

    relay = plumbing.build_runtime(topic="dedupe", group="g-dedupe", CDT_DEDUPE_RETENTION_HOURS=192)
    await relay.start(workers=True)
    try:
        await eventually(lambda: _is(kept(), {recent, timeless}), what="old record pruned")
    finally:
        await relay.stop()


async def _is(found: Awaitable[set[object]], expected: set[object]) -> bool:
    return await found == expected


async def test_relay_killed_after_send_before_mark_republishes_and_nothing_counts_twice(
    engine, infra, subprocess_env
) -> None:  # type: ignore[no-untyped-def]
    topic = await make_topics(infra, "relaycrash", "g-relaycrash")
    # The relay also mirrors every row to a second topic (as scoring's score-latest).
    mirror_topic = await make_topics(infra, "relaycrash-mirror", "g-relaycrash")
    writer = plumbing.build_runtime(topic="relaycrash", group="g-relaycrash", with_consumer=False)
    await writer.start(workers=False)
    try:
        async with writer.unit_of_work() as uow:
            written = [event(key=f"k{i % 3}", seq=i, topic=topic) for i in range(25)]
            for e in written:
                uow.publish(e)
            await uow.commit()
    finally:
        await writer.stop()
    env = {
        **subprocess_env,
        "PLUMBING_TOPIC": "relaycrash",
        "PLUMBING_GROUP": "g-relaycrash",
        "PLUMBING_MIRROR": "relaycrash-mirror",
    }
    worker = [sys.executable, "-m", "tests.integration.foundation.plumbing"]
    crashing = subprocess.run(
        worker,
        env={**env, "CDT_FAULT_POINTS": "relay.after_send"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert crashing.returncode == 137, crashing.stderr[-2000:]
    outbox = plumbing.tables.outbox
    async with engine.connect() as conn:
        unmarked = await conn.scalar(
            select(func.count())
            .select_from(outbox)
            .where(outbox.c.topic == topic, outbox.c.published_at.is_(None))
        )
    assert unmarked == 25, "sent but not marked: the rows will be sent again"

    survivor = subprocess.Popen(worker, env=env)
    try:
        records = await read_topic(
            infra.kafka_bootstrap_servers, topic, until=lambda rs: len(rs) >= 50
        )

        async def all_consumed() -> bool:
            committed = await committed_offsets(infra.kafka_bootstrap_servers, "g-relaycrash")
            return committed == 50

        await eventually(all_consumed, timeout=60, what="both copies consumed")
    finally:
        survivor.send_signal(signal.SIGTERM)
        survivor.wait(timeout=30)
    ids = [headers_of(r)["ce_id"] for r in records]
    assert len(ids) == 50 and len(set(ids)) == 25, "every event published exactly twice"
    # The mirror's copies were sent twice too, under the same derived ids: its readers dedupe.
    mirrored = await read_topic(
        infra.kafka_bootstrap_servers, mirror_topic, until=lambda rs: len(rs) >= 50
    )
    assert len(mirrored) == 50
    assert {headers_of(r)["ce_id"] for r in mirrored} == {
        str(derived_event_id(e.id, scope=mirror_topic)) for e in written
    }
    assert {headers_of(r)["ce_type"] for r in mirrored} == {plumbing.MIRRORED_TYPE}
    assert {(r.key, r.value) for r in mirrored} == {(r.key, r.value) for r in records}
    counts = await applied_counts(engine, "g-relaycrash")
    assert set(counts) == {e.id for e in written}
    assert set(counts.values()) == {1}


async def test_dead_letters_are_listed_and_replayed_once_after_a_fix(
    engine, producer, infra, subprocess_env, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    topic = await make_topics(infra, "replay", "g-replay")
    poisoned = event(key="k", seq=7, topic=topic, poison=True)
    await send_raw(producer, poisoned)
    runtime = plumbing.build_runtime(topic="replay", group="g-replay")
    await runtime.start(workers=True)
    try:
        await read_topic(
            infra.kafka_bootstrap_servers,
            plumbing.dlt_spec("replay", "g-replay").name,
            until=lambda rs: len(rs) == 1,
        )
    finally:
        await runtime.stop()
    assert await applied_counts(engine, "g-replay") == {}

    cli = [sys.executable, "-m", "common.deadletters", "--bootstrap", infra.kafka_bootstrap_servers]
    listed = subprocess.run(
        [*cli, "list", "g-replay", topic],
        env=subprocess_env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert f"event={poisoned.id}" in listed.stdout and "poisoned payload" in listed.stdout

    monkeypatch.setenv("PLUMBING_POISON_FIXED", "1")  # the fix is deployed
    replayed = subprocess.run(
        [*cli, "replay", "g-replay", topic],
        env=subprocess_env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "1 dead letters replayed" in replayed.stderr
    again = subprocess.run(
        [*cli, "replay", "g-replay", topic],
        env=subprocess_env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "0 dead letters replayed" in again.stderr

    runtime = plumbing.build_runtime(topic="replay", group="g-replay")
    await runtime.start(workers=True)
    try:

        async def applied_once() -> bool:
            return await applied_counts(engine, "g-replay") == {poisoned.id: 1}

        await eventually(applied_once, timeout=30, what="the replayed event applied")
    finally:
        await runtime.stop()


async def test_the_outbox_copy_is_a_database_span_when_sql_is_traced(engine, infra) -> None:  # type: ignore[no-untyped-def]
    """SQLAlchemy's instrumentation never sees a COPY (asyncpg's, beside the engine's events):
    the unit of work traces it itself, so an operator following an event sees its outbox write."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from common.db import UnitOfWork

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    topic = await make_topics(infra, "copy-span", "g-copy-span")
    uow = UnitOfWork(
        async_sessionmaker(engine), plumbing.tables, sql_tracer=provider.get_tracer("test")
    )
    async with uow:
        for i in range(3):
            uow.publish(event(key="k", seq=i, topic=topic))
        await uow.commit()
    [span] = [s for s in exporter.get_finished_spans() if s.name == "COPY"]
    assert span.attributes is not None
    assert span.attributes["db.collection.name"] == "plumbing.outbox"
    assert span.attributes["db.operation.batch.size"] == 3
