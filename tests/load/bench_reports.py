"""How fast a national score report renders, and with how much memory (not a test).

`python -m tests.load.bench_reports [teams]`: stores a national-shaped set of subjects, names
and scores (74,422 teams by default, one village each, 22 a commune, 34 provinces), then renders
the nation's team sheet as the API does (rows streamed from PostgreSQL through a server-side
cursor) to XLSX and CSV, and prints wall time, CPU time and this process's peak RSS growth.
The issue's aim: the national team sheet in under 10 s, memory bounded.
"""

# isort: skip_file
from __future__ import annotations

import asyncio
import gc
import os
import random
import resource
import sys
import time
from collections.abc import AsyncIterator

from tests.load.bench_scoring_support import hierarchy, infrastructure

import orjson  # after the import roots are set

from common.i18n import Language
from common.main import settle_heap
from scoring import adapters, domain
from scoring.api import render
from scoring.bootstrap import build_runtime
from scoring.domain.reports import ReportRow, ReportScope
from scoring.handlers import path_codes
from scoring.settings import ScoringSettings

PERIOD = "2026-11"


def rss_mb() -> float:
    """This process's resident memory now."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


class PeakRss:
    """The highest resident memory seen while the block runs (sampled every 20 ms)."""

    async def __aenter__(self) -> PeakRss:
        self.start = self.peak = rss_mb()
        self._task = asyncio.create_task(self._sample())
        return self

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, rss_mb())
            await asyncio.sleep(0.02)

    async def __aexit__(self, *_: object) -> None:
        self._task.cancel()
        self.peak = max(self.peak, rss_mb())


async def seed(runtime, teams: int) -> str:  # type: ignore[no-untyped-def]
    """Subjects, names and a score for every subject: what a national period looks like."""
    rng = random.Random(11)
    roster = hierarchy(teams, rng)
    async with runtime.sessions() as session:
        criteria = await adapters.active_criteria_set(session)
    subjects: dict[tuple[str, str], dict[str, str | None]] = {}
    for team in roster:
        for row in domain.subject_rows(team.id, path_codes(team.path)):
            subjects.setdefault((str(row["subject_type"]), str(row["subject_id"])), row)
    names = [
        (stype, sid, sid if stype != "team" else f"T-{sid[:8]}", f"Tổ dân phố Hòa Bình {index}")
        for index, (stype, sid) in enumerate(subjects)
    ]
    components = [
        {
            "criterion": c.id,
            "group": c.group,
            "points": 1.5,
            "max_points": c.max_points,
            "value": 3.0,
            "target": c.target,
        }
        for c in criteria.criteria
    ]
    indicators = {
        "teams": 1,
        "members": 5,
        "trained_members": 3,
        "activities": 12,
        "citizens_reached": 40,
        "households_visited": 9,
        "skills_taught": 3,
    }
    scores = [
        (
            stype,
            sid,
            PERIOD,
            criteria.version,
            rng.random() * 100,
            100.0,
            orjson.dumps(components).decode(),
            orjson.dumps(indicators).decode(),
            1,
            1,
            1,
        )
        for stype, sid in subjects
    ]
    async with runtime.engine.connect() as connection:
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection
        await driver.copy_records_to_table(
            "subjects",
            schema_name="scoring",
            records=[
                (
                    r["subject_type"],
                    r["subject_id"],
                    r["parent_type"],
                    r["parent_id"],
                    r["province"],
                    r["district"],
                    r["commune"],
                    r["village"],
                )
                for r in subjects.values()
            ],
            columns=[
                "subject_type",
                "subject_id",
                "parent_type",
                "parent_id",
                "province",
                "district",
                "commune",
                "village",
            ],
        )
        await driver.copy_records_to_table(
            "subject_names",
            schema_name="scoring",
            records=[(*n, 1) for n in names],
            columns=["subject_type", "subject_id", "code", "name", "version"],
        )
        await driver.executemany(
            "INSERT INTO scoring.scores (subject_type, subject_id, period, criteria_set, score,"
            " max_score, components, indicators, rank, rank_of, version, computed_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7::json, $8::json, $9, $10, $11, now())",
            scores,
        )
        await driver.execute("ANALYZE scoring.subjects; ANALYZE scoring.scores")
    print(f"seeded {len(subjects):,} subjects ({teams:,} teams) with names and scores", flush=True)
    return criteria.version


async def bench(teams: int) -> None:
    runtime = build_runtime(ScoringSettings())
    await runtime.migrate()
    criteria_version = await seed(runtime, teams)
    async with runtime.sessions() as session:
        criteria = await adapters.active_criteria_set(session)
    criterion_ids = [c.id for c in criteria.criteria]
    scope = ReportScope(
        level="national", unit_code=domain.NATIONAL_ID, period=PERIOD, criteria_set=criteria_version
    )
    summary = await _summary(runtime)
    settle_heap()

    async def rows() -> AsyncIterator[ReportRow]:
        async with runtime.sessions() as session:
            async for row in adapters.report_rows(session, scope, levels=("team",)):
                yield row

    for label in ("rows only", "xlsx", "csv", "json", "xlsx", "csv", "json"):
        gc.collect()
        memory = await PeakRss().__aenter__()
        wall, cpu = time.perf_counter(), time.process_time()
        if label == "rows only":  # reading and decoding, nothing rendered
            size = 0
            async for _ in rows():
                size += 1
        elif label == "xlsx":
            path = await render.xlsx_file(
                rows(), criteria=criterion_ids, language=Language.VI, summary=summary, title="bench"
            )
            size = os.path.getsize(path)
            os.unlink(path)
        else:
            size = 0
            async for chunk in render.csv_stream(
                rows(), criteria=criterion_ids, language=Language.VI
            ):
                size += len(chunk)
        await memory.__aexit__()
        print(
            f"national team sheet, {label}: {teams:,} rows, {size / 1e6:.1f} MB in "
            f"{time.perf_counter() - wall:.2f} s (CPU {time.process_time() - cpu:.2f} s); "
            f"RSS {memory.start:.0f} MB before, peak {memory.peak:.0f} MB",
            flush=True,
        )
    await runtime.engine.dispose()


async def _summary(runtime):  # type: ignore[no-untyped-def]
    async with runtime.sessions() as session:
        return await adapters.unit_summary(session, level="national", unit_code=domain.NATIONAL_ID)


def main() -> None:
    teams = int(sys.argv[1]) if len(sys.argv) > 1 else 74_422
    with infrastructure():
        asyncio.run(bench(teams))


if __name__ == "__main__":
    main()
