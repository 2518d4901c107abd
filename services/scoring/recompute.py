"""`python -m scoring recompute`: rebuild every indicator from stored facts, with progress."""

from __future__ import annotations

import asyncio
import sys
import time

from scoring import use_cases
from scoring.bootstrap import build_runtime
from scoring.settings import ScoringSettings


async def run_recompute(*, chunk: int = 50_000) -> use_cases.RecomputeResult:
    runtime = build_runtime(ScoringSettings())
    await runtime.migrate()
    started = time.perf_counter()

    def progress(done: int, total: int) -> None:
        rate = done / max(time.perf_counter() - started, 1e-9)
        print(f"recompute: {done:,}/{total:,} facts ({rate:,.0f}/s)", file=sys.stderr, flush=True)

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
