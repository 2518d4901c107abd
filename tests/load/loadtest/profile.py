"""Where the time goes: py-spy samples the service processes while the load runs.

`py-spy record --format raw` writes collapsed stacks (`frame;frame;… count`); we keep the
functions with the most samples on top of the stack (self time) and the project functions
(services/, libs/common) with the most samples anywhere in the stack (inclusive time).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>[^ ]+) \((?P<file>[^:]+):(?P<line>\d+)\)$")
# py-spy names files relative to sys.path: our code is `common/…` or `<service>/…`.
_OWN = re.compile(
    r"\((?:[^()]*/)?(?:libs/|services/)?(common|teams|activities|scoring|notifications)/"
)


def py_spy() -> str | None:
    found = shutil.which("py-spy")
    if found:
        return found
    candidate = Path(sys.executable).parent / "py-spy"
    return str(candidate) if candidate.exists() else None


def _short(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    file = match["file"]
    for marker in ("/site-packages/", "/services/", "/libs/", "/lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{match['func']} ({file})"


# Leaf frames of a thread that waits: the event loop in epoll (py-spy shows the innermost
# Python frame), a worker thread on its condition, a selector.
_IDLE = re.compile(
    r"^(Runner\.run|BaseEventLoop\.run_forever|BaseEventLoop\._run_once|run_forever|_run_once"
    r"|EpollSelector\.select|select|poll|Condition\.wait|wait|_worker|Event\.wait) \("
)


_WRAPPERS = re.compile(r"^(<module>|run_service|ServiceRuntime\._supervise|_run_code) \(")


def _is_idle(frame: str) -> bool:
    return bool(_IDLE.match(frame.strip()))


def summarise(raw: str, top: int = 12) -> dict[str, Any]:
    self_time: Counter[str] = Counter()
    own_inclusive: Counter[str] = Counter()
    total = idle = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        if _is_idle(frames[-1]):
            idle += count
            continue
        self_time[_short(frames[-1])] += count
        seen = set()
        for frame in frames:
            if _OWN.search(frame) and not _WRAPPERS.match(frame):
                short = _short(frame)
                if short not in seen:
                    seen.add(short)
                    own_inclusive[short] += count
    busy = max(total - idle, 1)
    return {
        "samples": total,
        "busy_share": round((total - idle) / max(total, 1), 3),
        "top_self": [
            {"function": f, "share_of_busy": round(c / busy, 3)}
            for f, c in self_time.most_common(top)
        ],
        "top_own_inclusive": [
            {"function": f, "share_of_busy": round(c / busy, 3)}
            for f, c in own_inclusive.most_common(top)
        ],
    }


async def record(pids: dict[str, int], seconds: float, out_dir: Path) -> dict[str, Any]:
    """Sample each process for `seconds` (in parallel); {} when py-spy is unavailable."""
    tool = py_spy()
    if tool is None:
        return {"error": "py-spy not installed (pip install py-spy)"}
    out_dir.mkdir(parents=True, exist_ok=True)

    async def one(name: str, pid: int) -> tuple[str, dict[str, Any]]:
        output = out_dir / f"{name}.folded"
        proc = await asyncio.create_subprocess_exec(
            tool,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(int(seconds), 1)),
            "--rate",
            "50",
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            str(output),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            # py-spy can block attaching (ptrace restrictions in some containers): never let the
            # profile hold the run up.
            _, err = await asyncio.wait_for(proc.communicate(), timeout=seconds + 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return name, {"error": f"py-spy did not finish within {seconds + 30:.0f} s"}
        if proc.returncode != 0 or not output.exists():
            return name, {"error": err.decode(errors="replace")[-300:]}
        summary = summarise(output.read_text())
        summary["folded"] = str(output)
        return name, summary

    results = await asyncio.gather(*(one(n, p) for n, p in pids.items()))
    return dict(results)
