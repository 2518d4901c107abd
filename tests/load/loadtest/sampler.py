"""CPU and memory per process, read from /proc once a second (no extra dependency)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS


def _rss_mb(pid: int) -> float | None:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 1e6
    except OSError:
        return None


@dataclass
class ProcessSampler:
    pids: dict[str, int]
    samples: list[dict[str, object]] = field(default_factory=list)

    async def run(self, stop: asyncio.Event, interval: float = 1.0) -> None:
        last = {name: _cpu_seconds(pid) for name, pid in self.pids.items()}
        last_at = time.monotonic()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
            now = time.monotonic()
            row: dict[str, object] = {"t": time.time()}
            for name, pid in self.pids.items():
                cpu = _cpu_seconds(pid)
                previous = last.get(name)
                if cpu is not None and previous is not None:
                    row[f"{name}.cpu_pct"] = round(100 * (cpu - previous) / (now - last_at), 1)
                row[f"{name}.rss_mb"] = _rss_mb(pid)
                last[name] = cpu
            last_at = now
            self.samples.append(row)

    def peaks(self) -> dict[str, dict[str, float]]:
        result: dict[str, dict[str, float]] = {}
        for name in self.pids:
            cpu = [
                float(s[f"{name}.cpu_pct"])
                for s in self.samples
                if s.get(f"{name}.cpu_pct") is not None
            ]  # type: ignore[arg-type]
            rss = [
                float(s[f"{name}.rss_mb"])
                for s in self.samples
                if s.get(f"{name}.rss_mb") is not None
            ]  # type: ignore[arg-type]
            result[name] = {
                "cpu_pct_mean": round(sum(cpu) / len(cpu), 1) if cpu else 0.0,
                "cpu_pct_peak": max(cpu, default=0.0),
                "rss_mb_peak": round(max(rss, default=0.0), 1),
            }
        return result
