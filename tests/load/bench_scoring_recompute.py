"""Full recompute time from stored facts on a scaled-down national dataset (not a test).

`python -m tests.load.bench_scoring_recompute [facts] [teams]`: writes `facts` activity facts
(built by the same domain function the consumer uses) with COPY, then times
`use_cases.recompute` and extrapolates linearly to the national 10,000,000 activities.
"""

# isort: skip_file
# (the support module must be imported first: it sets the import roots)
from __future__ import annotations

import asyncio
import json
import random
import sys
import time

from tests.load.bench_scoring_support import activity_fields, hierarchy, infrastructure

import asyncpg  # after the import roots are set

from common.contracts.activities import ActivityRecorded
from common.db import asyncpg_dsn
from scoring import use_cases
from scoring.bootstrap import build_runtime
from scoring.handlers import fact_from_event
from scoring.settings import ScoringSettings

NATIONAL_ACTIVITIES = 10_000_000
NATIONAL_TEAMS = 74_422


async def load_facts(database_url: str, facts: int, teams: int) -> float:
    rng = random.Random(7)
    roster = hierarchy(teams, rng)
    started = time.perf_counter()
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        rows = []
        for _ in range(facts):
            fact = fact_from_event(ActivityRecorded(**activity_fields(rng.choice(roster), rng)))  # type: ignore[arg-type]
            rows.append(
                (
                    fact.activity_id,
                    fact.team_id,
                    fact.path.province,
                    fact.path.district,
                    fact.path.commune,
                    fact.path.village,
                    fact.occurred_at,
                    list(fact.periods),
                    json.dumps(fact.counters),
                    json.dumps(fact.distinct),
                    True,
                    False,
                )
            )
            if len(rows) == 50_000:
                await _copy(connection, rows)
                rows = []
        if rows:
            await _copy(connection, rows)
    finally:
        await connection.close()
    return time.perf_counter() - started


async def _copy(connection: asyncpg.Connection, rows: list[tuple[object, ...]]) -> None:
    await connection.copy_records_to_table(
        "activity_facts",
        schema_name="scoring",
        records=rows,
        columns=[
            "activity_id",
            "team_id",
            "province",
            "district",
            "commune",
            "village",
            "occurred_at",
            "periods",
            "counters",
            "distinct_values",
            "recorded",
            "voided",
        ],
    )


async def bench(facts: int, teams: int) -> None:
    settings = ScoringSettings()
    runtime = build_runtime(settings)
    await runtime.migrate()
    loaded = await load_facts(settings.database_url, facts, teams)
    print(f"stored {facts:,} facts over {teams:,} teams in {loaded:.1f} s", flush=True)
    started = time.perf_counter()

    def progress(done: int, total: int) -> None:
        elapsed = time.perf_counter() - started
        print(f"  {done:,}/{total:,} facts, {elapsed:.1f} s", flush=True)

    try:
        async with runtime.unit_of_work() as uow:
            result = await use_cases.recompute(uow.session, progress=progress)
            await uow.commit()
    finally:
        await runtime.engine.dispose()
    per_fact = result.seconds / max(result.facts, 1)
    print(
        f"full recompute: {result.facts:,} facts, {result.teams:,} teams in "
        f"{result.seconds:.1f} s ({result.facts / result.seconds:,.0f} facts/s); "
        f"{result.dirty:,} subject-periods queued for re-scoring",
        flush=True,
    )
    print(
        f"linear extrapolation to {NATIONAL_ACTIVITIES:,} activities / {NATIONAL_TEAMS:,} teams: "
        f"{per_fact * NATIONAL_ACTIVITIES:,.0f} s",
        flush=True,
    )


def main() -> None:
    facts = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    teams = int(sys.argv[2]) if len(sys.argv) > 2 else 1_500
    with infrastructure():
        asyncio.run(bench(facts, teams))


if __name__ == "__main__":
    main()
