"""CPU and memory per process, read from /proc once a second (no extra dependency).

A named process counts with all its descendants: PostgreSQL's backends are children of the
postmaster, so `postgres` is the whole server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return children


def family(pid: int, children: dict[int, list[int]]) -> list[int]:
    found, todo = [pid], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _cpu_seconds(pids: list[int]) -> float | None:
    total, seen = 0.0, False
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is None:
            continue
        seen = True
        total += (int(fields[11]) + int(fields[12])) / TICKS
    return total if seen else None


def _memory_mb(pid: int) -> float | None:
    """Proportional set size (shared pages split between their users, so PostgreSQL's shared
    buffers count once for the server), or RSS where smaps_rollup is not readable."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 1e6
    except (OSError, IndexError):
        return None


def _rss_mb(pids: list[int]) -> float | None:
    values = [m for pid in pids if (m := _memory_mb(pid)) is not None]
    return round(sum(values), 1) if values else None


def _machine_busy_seconds() -> float | None:
    """CPU seconds spent busy by the whole machine, every process (ours and others)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / TICKS


def pid_listening(port: int) -> int | None:
    """The process listening on a local TCP port (from /proc/net/tcp*), if it is ours to see."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(parts[9])
    if not inodes:
        return None
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            for fd in fd_dir.iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    return int(fd_dir.parent.name)
        except OSError:
            continue
    return None


@dataclass
class ProcessSampler:
    pids: dict[str, int]
    started: float = field(default_factory=time.time)
    alone: frozenset[str] = frozenset({"loadtest"})  # without descendants (it spawned the stack)
    samples: list[dict[str, float | None]] = field(default_factory=list)

    async def run(self, stop: asyncio.Event, interval: float = 1.0) -> None:
        groups = self._groups()
        last = {name: _cpu_seconds(pids) for name, pids in groups.items()}
        last["machine"] = _machine_busy_seconds()
        last_at = time.monotonic()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
            now = time.monotonic()
            groups = self._groups()
            row: dict[str, float | None] = {"t": round(time.time() - self.started, 1)}
            for name, pids in groups.items():
                cpu = _cpu_seconds(pids)
                previous = last.get(name)
                if cpu is not None and previous is not None and now > last_at:
                    row[f"{name}.cpu_pct"] = round(
                        100 * max(cpu - previous, 0) / (now - last_at), 1
                    )
                row[f"{name}.rss_mb"] = _rss_mb(pids)
                last[name] = cpu
            busy, previous_busy = _machine_busy_seconds(), last.get("machine")
            if busy is not None and previous_busy is not None and now > last_at:
                row["machine.cpu_pct"] = round(
                    100 * max(busy - previous_busy, 0) / (now - last_at), 1
                )
            last["machine"] = busy
            last_at = now
            self.samples.append(row)

    def _groups(self) -> dict[str, list[int]]:
        children = _children_map()
        return {
            name: [pid] if name in self.alone else family(pid, children)
            for name, pid in self.pids.items()
        }

    def summary(
        self, since: float = 0.0, until: float = float("inf")
    ) -> dict[str, dict[str, float]]:
        """Mean and peak CPU (% of one core) and peak RSS per process between two times."""
        rows = [s for s in self.samples if since <= float(s["t"] or 0) <= until]
        result: dict[str, dict[str, float]] = {}
        for name in self.pids:
            cpu = [float(v) for s in rows if (v := s.get(f"{name}.cpu_pct")) is not None]
            rss = [float(v) for s in rows if (v := s.get(f"{name}.rss_mb")) is not None]
            result[name] = {
                "cpu_pct_mean": round(sum(cpu) / len(cpu), 1) if cpu else 0.0,
                "cpu_pct_peak": max(cpu, default=0.0),
                "rss_mb_peak": round(max(rss, default=0.0), 1),
            }
        return result

    def machine_cpu_pct(self, since: float = 0.0, until: float = float("inf")) -> float | None:
        """Mean busy CPU of the whole machine (all processes, 100 % per core)."""
        values = [
            float(v)
            for s in self.samples
            if since <= float(s["t"] or 0) <= until and (v := s.get("machine.cpu_pct")) is not None
        ]
        return round(sum(values) / len(values), 1) if values else None

    def latest(self) -> dict[str, float]:
        if not self.samples:
            return {}
        row = self.samples[-1]
        return {name: float(row.get(f"{name}.cpu_pct") or 0.0) for name in self.pids}
