"""`python -m scoring recompute`: rebuild every indicator from stored facts, with progress."""

from __future__ import annotations

import asyncio
import sys
import time

from scoring import use_cases
from scoring.bootstrap import build_runtime
from scoring.settings import ScoringSettings

BAR_WIDTH = 30


def progress_line(done: int, total: int, seconds: float) -> str:
    """`recompute: [#######.......]  45% 90,000/200,000 facts, 5,800/s, ETA 19 s`."""
    share = done / total if total else 1.0
    filled = round(share * BAR_WIDTH)
    rate = done / seconds if seconds > 0 else 0.0
    eta = f"ETA {(total - done) / rate:,.0f} s" if rate and done < total else "done"
    return (
        f"recompute: [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {share:4.0%} "
        f"{done:,}/{total:,} facts, {rate:,.0f}/s, {eta}"
    )


async def run_recompute(*, chunk: int = 50_000) -> use_cases.RecomputeResult:
    runtime = build_runtime(ScoringSettings())
    await runtime.migrate()
    started = time.perf_counter()

    def progress(done: int, total: int) -> None:
        print(
            progress_line(done, total, time.perf_counter() - started), file=sys.stderr, flush=True
        )

    try:
        async with runtime.unit_of_work() as uow:
            result = await use_cases.recompute(uow.session, chunk=chunk, progress=progress)
            await uow.commit()
    finally:
        await runtime.engine.dispose()
    print(
        f"recompute: done: {result.facts:,} facts, {result.teams:,} teams in "
        f"{result.seconds:.1f} s; {result.dirty:,} subject-periods queued for re-scoring",
        flush=True,
    )
    return result


def main() -> None:
    asyncio.run(run_recompute())
