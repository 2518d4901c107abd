"""An agency's score subscriber, written against the published contract only (docs/subscribers.md).

1. Snapshot: read the compacted `scoring.score-latest.v1` from the beginning to its current end,
   without a consumer group: the latest score of every subject and period.
2. Follow: read `scoring.score-updated.v1` in the group `<username>.scores` (offsets committed
   after each batch is applied); on the very first run it starts where the topic ended before
   the snapshot began, so no change between the two is missed.
3. Every record: check its CloudEvents headers, validate its JSON against the schema its
   `ce_dataschema` names (a local copy of docs/schemas, or the URL itself), and keep it only if
   its `version` is newer than the one held for its key (duplicates and replays change nothing).

Needs Python 3.11 and `aiokafka` (`jsonschema_rs` or `jsonschema` to validate; without either
the records are only parsed). Configuration, as printed by `add-subscriber`:

    KAFKA_BOOTSTRAP_SERVERS=broker:9092 KAFKA_USERNAME=tong-cuc-thong-ke KAFKA_PASSWORD=… \\
    KAFKA_SECURITY_PROTOCOL=SASL_SSL KAFKA_CA_FILE=ca.pem python examples/score_subscriber.py

`--schemas docs/schemas` validates against a local copy; `--idle-exit 10` stops after 10 s
without records (a demonstration or a test; without it, it follows for ever); `--verbose`
prints every score kept (`<key>  v<version>  <score>`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition

SCORE_LATEST = "scoring.score-latest.v1"
SCORE_UPDATED = "scoring.score-updated.v1"
REQUIRED_HEADERS = ("ce_id", "ce_type", "ce_source", "ce_time", "ce_dataschema")


def client_options() -> dict[str, Any]:
    """SASL SCRAM-SHA-512 over TLS in production; SASL_PLAINTEXT on a local broker."""
    protocol = os.environ.get("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    options: dict[str, Any] = {
        "bootstrap_servers": os.environ["KAFKA_BOOTSTRAP_SERVERS"],
        "security_protocol": protocol,
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": os.environ["KAFKA_USERNAME"],
        "sasl_plain_password": os.environ["KAFKA_PASSWORD"],
    }
    if protocol == "SASL_SSL":
        options["ssl_context"] = ssl.create_default_context(cafile=os.environ.get("KAFKA_CA_FILE"))
    return options


def schema_validator(schemas: Path | None) -> Callable[[str, dict[str, Any]], None]:
    """`validate(dataschema_url, payload)`: raises if the payload breaks the schema."""
    cache: dict[str, Callable[[Any], None]] = {}

    def load(url: str) -> dict[str, Any]:
        ce_type = url.rsplit("/", 1)[-1].removesuffix(".json")
        if schemas is not None:  # docs/schemas/<ce_type>/<n>.json: the latest version
            versions = sorted((schemas / ce_type).glob("*.json"), key=lambda p: int(p.stem))
            return dict(json.loads(versions[-1].read_text()))
        with urllib.request.urlopen(url, timeout=10) as reply:  # noqa: S310  # the contract's URL
            return dict(json.load(reply))

    def compile_schema(schema: dict[str, Any]) -> Callable[[Any], None]:
        try:
            import jsonschema_rs

            return jsonschema_rs.validator_for(schema).validate  # type: ignore[no-any-return]
        except ImportError:
            pass
        try:
            import jsonschema

            return jsonschema.Draft202012Validator(schema).validate
        except ImportError:
            return lambda _payload: None  # parsed, not validated

    def validate(url: str, payload: dict[str, Any]) -> None:
        if url not in cache:
            cache[url] = compile_schema(load(url))
        try:
            cache[url](payload)
        except Exception as invalid:  # each library has its own error type
            raise ValueError(f"not valid against {url}: {invalid}") from invalid

    return validate


@dataclass
class Scores:
    """The latest score per key (`subject_type:subject_id:period`), by `version`."""

    validate: Callable[[str, dict[str, Any]], None]
    verbose: bool = False
    latest: dict[str, dict[str, Any]] = field(default_factory=dict)
    applied: int = 0
    ignored: int = 0
    rejected: int = 0

    def take(self, record: ConsumerRecord[bytes, bytes]) -> bool:
        """Keep the record's score if it is valid and newer than the one held for its key."""
        if record.value is None or record.key is None:
            return False  # a tombstone: nothing to keep
        try:
            score = decode(record, self.validate)
        except ValueError as invalid:
            self.rejected += 1  # report it to the publisher; never guess at its meaning
            print(f"rejected {record.topic}@{record.partition}:{record.offset}: {invalid}")
            return False
        kept = self.offer(record.key.decode(), score)
        if kept and self.verbose:
            print(f"{record.key.decode()}  v{score['version']}  {score['score']}")
        return kept

    def offer(self, key: str, score: dict[str, Any]) -> bool:
        held = self.latest.get(key)
        if held is not None and held["version"] >= score["version"]:
            self.ignored += 1  # a duplicate, a replay, or older than the snapshot
            return False
        self.latest[key] = score
        self.applied += 1
        return True


def decode(record: ConsumerRecord[bytes, bytes], validate: Callable[..., None]) -> dict[str, Any]:
    headers = {name: value.decode() for name, value in record.headers}
    missing = [name for name in REQUIRED_HEADERS if name not in headers]
    if missing:
        raise ValueError(f"{record.topic}@{record.offset}: no {', '.join(missing)}")
    payload: dict[str, Any] = json.loads(record.value)
    validate(headers["ce_dataschema"], payload)
    return payload


async def end_offsets(topic: str) -> dict[TopicPartition, int]:
    probe = AIOKafkaConsumer(topic, **client_options(), group_id=None)  # start() loads its metadata
    await probe.start()
    try:
        partitions = [TopicPartition(topic, p) for p in probe.partitions_for_topic(topic) or ()]
        return dict(await probe.end_offsets(partitions))
    finally:
        await probe.stop()


async def snapshot(scores: Scores) -> None:
    """Everything `score-latest` holds now (compaction keeps at least the latest per key)."""
    ends = await end_offsets(SCORE_LATEST)
    consumer = AIOKafkaConsumer(**client_options(), group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(ends))
        await consumer.seek_to_beginning(*ends)
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for record in records:
                    scores.take(record)
    finally:
        await consumer.stop()


class StartAfterSnapshot(ConsumerRebalanceListener):  # type: ignore[misc]
    """The group's first run (nothing committed on a partition): start where the topic ended
    before the snapshot, which already holds everything older."""

    def __init__(self, consumer: AIOKafkaConsumer, start: dict[TopicPartition, int]) -> None:
        self._consumer, self._start = consumer, start

    async def on_partitions_revoked(self, revoked: object) -> None:
        pass

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        for tp in assigned:
            if tp in self._start and await self._consumer.committed(tp) is None:
                self._consumer.seek(tp, self._start[tp])


async def follow(
    scores: Scores,
    *,
    group: str,
    start: dict[TopicPartition, int],
    idle_exit: float | None,
) -> None:
    consumer = AIOKafkaConsumer(
        **client_options(),
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    consumer.subscribe([SCORE_UPDATED], listener=StartAfterSnapshot(consumer, start))
    await consumer.start()
    try:
        idle = 0.0
        while idle_exit is None or idle < idle_exit:
            batch = await consumer.getmany(timeout_ms=1000, max_records=500)
            idle = idle + 1 if not batch else 0.0
            for records in batch.values():
                for record in records:
                    scores.take(record)
            if batch:
                await consumer.commit()  # after applying: a crash replays, `version` absorbs it
    finally:
        await consumer.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--schemas", type=Path, help="a local copy of docs/schemas")
    parser.add_argument("--idle-exit", type=float, help="stop after this many idle seconds")
    parser.add_argument("--verbose", action="store_true", help="print every score kept")
    args = parser.parse_args()
    scores = Scores(validate=schema_validator(args.schemas), verbose=args.verbose)
    follow_from = await end_offsets(SCORE_UPDATED)  # before the snapshot: nothing falls between
    await snapshot(scores)
    print(f"snapshot: {len(scores.latest)} scores from {SCORE_LATEST}", flush=True)
    group = f"{os.environ['KAFKA_USERNAME']}.scores"  # the principal may use `<username>.…` only
    await follow(scores, group=group, start=follow_from, idle_exit=args.idle_exit)
    print(
        f"stopped: {len(scores.latest)} held, {scores.applied} applied, "
        f"{scores.ignored} ignored, {scores.rejected} rejected"
    )


if __name__ == "__main__":
    asyncio.run(main())
