"""Inspect and replay dead letters: `python -m common.deadletters list|replay GROUP [TOPIC]`.

A dead letter keeps the original value and CloudEvent headers, so replaying it to its original
topic after a fix is applied once (dead-lettered events were never marked processed). Replay
progress is a consumer group of its own (`dlt-replay.<group>`): a record is replayed once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from common.kafka import kafka_client_options, make_producer
from common.settings import KafkaSettings
from common.topics import CONSUMER_GROUPS, dead_letter_topic

DLT_HEADERS = (
    "dlt_original_topic",
    "dlt_original_partition",
    "dlt_original_offset",
    "dlt_group",
    "dlt_reason",
)


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    offset: int
    original: str
    reason: str
    event_id: str | None
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    def replay_headers(self) -> list[tuple[str, bytes]]:
        return [(k, v) for k, v in self.headers if k not in DLT_HEADERS]


def _letter(record: ConsumerRecord[bytes, bytes]) -> DeadLetter:
    attrs = {k: v.decode("utf-8", "replace") for k, v in record.headers}
    return DeadLetter(
        topic=record.topic,
        offset=record.offset,
        original=f"{attrs.get('dlt_original_topic')}@{attrs.get('dlt_original_partition')}:"
        f"{attrs.get('dlt_original_offset')}",
        reason=attrs.get("dlt_reason", ""),
        event_id=attrs.get("ce_id"),
        key=record.key,
        value=record.value,
        headers=list(record.headers),
    )


def dead_letter_topics(group: str, topic: str | None) -> list[str]:
    if topic is not None:
        return [dead_letter_topic(topic, group)]
    return [dead_letter_topic(spec.name, group) for spec in CONSUMER_GROUPS.get(group, ())]


async def _drain(consumer: AIOKafkaConsumer) -> list[ConsumerRecord[bytes, bytes]]:
    records: list[ConsumerRecord[bytes, bytes]] = []
    while True:
        batch = await consumer.getmany(timeout_ms=1500)
        if not batch:
            return records
        for part in batch.values():
            records.extend(part)


async def list_letters(
    bootstrap: str, topics: list[str], *, security: KafkaSettings | None = None
) -> list[DeadLetter]:
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **kafka_client_options(security),
    )
    await consumer.start()
    try:
        return [_letter(r) for r in await _drain(consumer)]
    finally:
        await consumer.stop()


async def replay(
    bootstrap: str, *, group: str, topics: list[str], security: KafkaSettings | None = None
) -> list[DeadLetter]:
    """Re-publish not-yet-replayed dead letters to their original topics (as an operator: the
    superuser, since the replay writes to the topics of another service)."""
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=f"dlt-replay.{group}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **kafka_client_options(security),
    )
    producer = make_producer(bootstrap, client_id=f"dlt-replay.{group}", security=security)
    await consumer.start()
    await producer.start()
    try:
        letters = [_letter(r) for r in await _drain(consumer)]
        for letter in letters:
            original_topic = letter.original.split("@", 1)[0]
            await producer.send_and_wait(
                original_topic, value=letter.value, key=letter.key, headers=letter.replay_headers()
            )
        await consumer.commit()  # only after every replayed record is acknowledged
        return letters
    finally:
        await producer.stop()
        await consumer.stop()


def _lines(letters: list[DeadLetter]) -> Iterator[str]:
    for letter in letters:
        yield (
            f"{letter.topic}:{letter.offset}  from {letter.original}  "
            # One line per letter: multi-line reasons (validation errors) are folded.
            f"event={letter.event_id or '-'}  reason={' | '.join(letter.reason.splitlines())}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.deadletters", description=__doc__)
    parser.add_argument("command", choices=["list", "replay"])
    parser.add_argument("group", help="consumer group, e.g. scoring")
    parser.add_argument("topic", nargs="?", help="original topic (default: all the group reads)")
    parser.add_argument(
        "--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    )
    args = parser.parse_args(argv)
    topics = dead_letter_topics(args.group, args.topic)
    if not topics:
        parser.error(f"unknown group {args.group!r} and no topic given")
    if args.command == "list":
        letters = asyncio.run(list_letters(args.bootstrap, topics))
    else:
        letters = asyncio.run(replay(args.bootstrap, group=args.group, topics=topics))
    for line in _lines(letters):
        print(line)
    verb = "dead letters" if args.command == "list" else "dead letters replayed"
    print(f"{len(letters)} {verb}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
