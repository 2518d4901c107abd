"""Where a consumer batch spends its time (not a test): `apply_batch` and one publisher pass,
called directly (no Kafka consumer), with the time of each SQL statement.

`python -m tests.load.bench_scoring_apply [batches] [batch] [teams]`
"""

# isort: skip_file
from __future__ import annotations

import asyncio
import random
import sys
import time
from collections import defaultdict
from typing import Any

from tests.load.bench_scoring_support import activity_fields, hierarchy, infrastructure

from sqlalchemy import event

from common import db
from common.contracts.activities import ActivityRecorded
from common.main import settle_heap
from scoring import use_cases
from scoring.bootstrap import build_runtime
from scoring.handlers import apply_batch
from scoring.settings import ScoringSettings
from tests.unit.scoring.factory import inbound


async def bench(batches: int, size: int, teams: int) -> None:
    runtime = build_runtime(ScoringSettings())
    await runtime.migrate()
    sql: dict[str, float] = defaultdict(float)
    started_at: dict[int, float] = {}

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        started_at[id(cursor)] = time.perf_counter()

    def after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        key = " ".join(statement.split())[:70]
        sql[key] += time.perf_counter() - started_at.pop(id(cursor), time.perf_counter())

    event.listen(runtime.engine.sync_engine, "before_cursor_execute", before)
    event.listen(runtime.engine.sync_engine, "after_cursor_execute", after)
    copy_records = db.copy_records

    async def timed_copy(session: Any, table: Any, *args: Any) -> None:
        # the outbox COPY runs on asyncpg directly: no cursor event, timed here
        started = time.perf_counter()
        await copy_records(session, table, *args)
        sql[f"COPY {table.schema}.{table.name}"] += time.perf_counter() - started

    db.copy_records = timed_copy  # type: ignore[assignment]  # looked up at call time
    rng = random.Random(5)
    roster = hierarchy(teams, rng)
    settle_heap()  # as `python -m scoring worker` does
    total = publish = 0.0
    cpu_apply = cpu_publish = 0.0  # this process's CPU (Python), steadier than wall time here
    try:
        for _ in range(batches):
            events = [
                inbound(ActivityRecorded(**activity_fields(rng.choice(roster), rng)))  # type: ignore[arg-type]
                for _ in range(size)
            ]
            started, cpu = time.perf_counter(), time.process_time()
            async with runtime.unit_of_work() as uow:
                await apply_batch(uow.session, events)
                await uow.commit()
            total += time.perf_counter() - started
            cpu_apply += time.process_time() - cpu
            started, cpu = time.perf_counter(), time.process_time()
            while await use_cases.publish_dirty(runtime):
                pass
            publish += time.perf_counter() - started
            cpu_publish += time.process_time() - cpu
    finally:
        await runtime.engine.dispose()
    events_n = batches * size
    print(
        f"apply_batch: {events_n:,} events in {total:.2f} s: {events_n / total:,.0f} events/s "
        f"(Python CPU {cpu_apply:.2f} s, {cpu_apply / events_n * 1e6:.0f} µs/event)"
    )
    print(
        f"publisher: {publish:.2f} s for the same ({events_n / publish:,.0f} events/s; "
        f"Python CPU {cpu_publish:.2f} s)"
    )
    for key, seconds in sorted(sql.items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {seconds:7.2f} s  {key}")


def main() -> None:
    batches = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    teams = int(sys.argv[3]) if len(sys.argv) > 3 else 2_000
    with infrastructure():
        asyncio.run(bench(batches, size, teams))


if __name__ == "__main__":
    main()
