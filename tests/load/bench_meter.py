"""What a benchmark phase cost: CPU of this process and of PostgreSQL, and its costliest
statements (`pg_stat_statements`, preloaded by the local PostgreSQL the benchmarks start).

CPU next to wall time: this machine's absolute figures drift between runs, CPU per event less.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from common.runtime import ServiceRuntime
from tests.load.loadtest.sampler import _children_map, _cpu_seconds, family


def _postgres_cpu(pid: int | None) -> float:
    """CPU seconds of the server and its live backends (and of exited ones it reaped)."""
    if pid is None:
        return 0.0
    return _cpu_seconds(family(pid, _children_map())) or 0.0


@dataclass(frozen=True)
class PhaseCost:
    wall: float
    python_cpu: float
    postgres_cpu: float

    def per_item(self, items: int, *, unit: str = "event") -> str:
        """`wall, CPU: Python N µs/unit, PostgreSQL M µs/unit`."""
        count = max(items, 1)
        return (
            f"{self.wall:.1f} s wall; CPU {self.python_cpu:.1f} s Python "
            f"({self.python_cpu / count * 1e6:,.0f} µs/{unit}), {self.postgres_cpu:.1f} s "
            f"PostgreSQL ({self.postgres_cpu / count * 1e6:,.0f} µs/{unit})"
        )


class CpuMeter:
    """CPU spent between `start()` and `stop()` by this process and by PostgreSQL."""

    def __init__(self, postgres_pid: int | None) -> None:
        self._postgres_pid = postgres_pid
        self._started = (0.0, 0.0, 0.0)

    def _now(self) -> tuple[float, float, float]:
        times = os.times()
        return (
            time.perf_counter(),
            times.user + times.system,
            _postgres_cpu(self._postgres_pid),
        )

    def start(self) -> CpuMeter:
        self._started = self._now()
        return self

    def stop(self) -> PhaseCost:
        now = self._now()
        wall, python, postgres = (b - a for a, b in zip(self._started, now, strict=True))
        return PhaseCost(wall=wall, python_cpu=python, postgres_cpu=postgres)


async def reset_statements(runtime: ServiceRuntime) -> bool:
    """Start counting statements afresh; False where the server does not preload the module."""
    try:
        async with runtime.sessions() as session:
            await session.execute(text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
            await session.execute(text("SELECT pg_stat_statements_reset()"))
            await session.commit()
    except DBAPIError:
        return False
    return True


async def top_statements(runtime: ServiceRuntime, *, items: int, limit: int = 10) -> list[str]:
    """The statements that took the most execution time since the reset, one line each."""
    async with runtime.sessions() as session:
        rows = await session.execute(
            text(
                """
                SELECT total_exec_time, calls, rows,
                       regexp_replace(query, '\\s+', ' ', 'g') AS query
                FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT :limit
                """
            ),
            {"limit": limit},
        )
        lines = []
        for total_ms, calls, row_count, query in rows:
            lines.append(
                f"{total_ms / 1000:7.1f} s {total_ms * 1000 / max(items, 1):6.0f} µs/event "
                f"{calls:7d} calls {row_count:9d} rows  {query[:110]}"
            )
        return lines
