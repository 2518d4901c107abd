"""How fast scoring's Python could go with no database at all (not a test): the ceiling any
design that keeps this hot path in Python runs into on this machine.

`python -m tests.load.bench_scoring_ceiling [events] [teams]`: pre-loads `events`
ActivityRecorded to Kafka, then times, each over the whole backlog and cumulatively:
1. consuming it with aiokafka (`tests.helpers.read_topic`, no group);
2. decoding the CloudEvents (`decode_kafka_record`, as the consumer does);
3. validating the payloads against the contract (pydantic);
4. building the facts and their signed deltas (`fact_from_event`, `Deltas.add_facts`), the
   domain work one consumer batch does before its first SQL statement.
"""

# isort: skip_file
# (the support module must be imported first: it sets the import roots)
from __future__ import annotations

import asyncio
import sys
import time

from tests.load.bench_scoring_support import infrastructure

from common.contracts.activities import ActivityRecorded
from common.envelope import decode_kafka_record
from common.main import settle_heap
from scoring.domain import Deltas
from scoring.handlers import fact_from_event
from scoring.settings import ScoringSettings
from tests.helpers import read_topic
from tests.load.bench_scoring_throughput import produce

BATCH = 5_000  # the consumer's default batch


def expand(parsed: list[ActivityRecorded]) -> int:
    keys = 0
    for start in range(0, len(parsed), BATCH):
        deltas = Deltas()
        deltas.add_facts([fact_from_event(e) for e in parsed[start : start + BATCH]], +1)
        keys += len(deltas.sets) + len(deltas.distinct)
    return keys


async def bench(events: int, teams: int) -> None:
    settings = ScoringSettings()
    await produce(settings.kafka_bootstrap_servers, events, teams)
    settle_heap()
    started = time.perf_counter()
    records = await read_topic(
        settings.kafka_bootstrap_servers,
        ActivityRecorded.TOPIC.name,
        until=lambda got: len(got) >= events,
        timeout=300,
    )
    consumed = time.perf_counter()
    inbound = [decode_kafka_record(r) for r in records]
    decoded = time.perf_counter()
    parsed = [e.parse(ActivityRecorded) for e in inbound]
    validated = time.perf_counter()
    keys = expand(parsed)
    expanded = time.perf_counter()
    stages = [
        ("consume (aiokafka)", consumed - started),
        ("decode CloudEvents", decoded - consumed),
        ("validate (pydantic)", validated - decoded),
        ("facts + deltas", expanded - validated),
    ]
    total = 0.0
    for name, seconds in stages:
        total += seconds
        print(
            f"{name:<20} {seconds:6.2f} s  {seconds / events * 1e6:6.1f} µs/event  "
            f"cumulative ceiling {events / total:8,.0f} events/s"
        )
    print(f"{events:,} events, {keys:,} aggregate keys, no SQL")


def main() -> None:
    events = int(sys.argv[1]) if len(sys.argv) > 1 else 30_000
    teams = int(sys.argv[2]) if len(sys.argv) > 2 else 2_000
    with infrastructure():
        asyncio.run(bench(events, teams))


if __name__ == "__main__":
    main()
