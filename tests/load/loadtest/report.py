"""The load test's JSON report and PNG chart under reports/."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)], 1)

    return {
        "count": len(ordered),
        "p50": pick(0.5),
        "p95": pick(0.95),
        "p99": pick(0.99),
        "p99.9": pick(0.999),
        "max": round(ordered[-1], 1),
    }


def windowed_p(
    points: list[tuple[float, float]], q: float, width: float = 5.0
) -> tuple[list[float], list[float]]:
    buckets: dict[int, list[float]] = {}
    for t, v in points:
        buckets.setdefault(int(t // width), []).append(v)
    xs = sorted(buckets)
    key = f"p{int(q * 100)}"
    return [x * width + width / 2 for x in xs], [percentiles(buckets[x])[key] for x in xs]


def scored_rate(
    pipeline: list[dict[str, Any]], width: float = 5.0
) -> tuple[list[float], list[float]]:
    """Scored activities per second (national `activities` indicator), over `width` s windows."""
    rows = [r for r in pipeline if r.get("scored") is not None]
    if len(rows) < 2:
        return [], []
    xs, ys = [], []
    start, end = rows[0]["t"], rows[-1]["t"]
    edge = start
    while edge + width <= end + 1e-9:
        before = max((r for r in rows if r["t"] <= edge), key=lambda r: r["t"])
        after = max((r for r in rows if r["t"] <= edge + width), key=lambda r: r["t"])
        dt = after["t"] - before["t"]
        xs.append(edge + width / 2)
        ys.append(max(after["scored"] - before["scored"], 0) / dt if dt > 0 else 0.0)
        edge += width
    return xs, ys


def binned(per_second: Counter[int], width: int = 5) -> tuple[list[float], list[float]]:
    """Events per second averaged over `width` s bins, zeros included."""
    if not per_second:
        return [], []
    first, last = min(per_second) // width, max(per_second) // width
    totals: Counter[int] = Counter()
    for second, count in per_second.items():
        totals[second // width] += count
    bins = range(first, last + 1)
    return [b * width + width / 2 for b in bins], [totals[b] / width for b in bins]


def write_json(report: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str))
    return path


def chart(
    path: Path,
    *,
    title: str,
    phases: list[dict[str, Any]],
    accepted_per_second: Counter[int],
    acceptance: list[tuple[float, float]],
    end_to_end: list[tuple[float, float]],
    pipeline: list[dict[str, Any]],
    processes: list[dict[str, Any]],
    spans: Sequence[tuple[float, float, str]] = (),
    windows: Sequence[dict[str, Any]] = (),
) -> Path:
    """Throughput, latency, queues, CPU and memory over the run; `spans` (the bulk import) are
    hatched on every panel, the soak's `windows` add their e2e p99 to the latency panel."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(5, 1, figsize=(12, 16), sharex=True)
    top, middle, lags, cpu, memory = axes
    xs, ys = binned(accepted_per_second)
    top.plot(xs, ys, label="accepted events/s (5 s bins)", lw=1)
    xs, ys = scored_rate(pipeline)
    top.plot(xs, ys, label="scored events/s (national indicator, 5 s)", lw=1)
    for phase in phases:
        top.hlines(
            phase["offered_rate"], phase["started"], phase["ended"], colors="grey", linestyles=":"
        )
    top.set_ylabel("events/s")
    top.legend(loc="upper left", fontsize="small")
    for label, points in (("acceptance", acceptance), ("end to end", end_to_end)):
        for q in (0.5, 0.99):
            wx, wy = windowed_p(points, q)
            if wx:
                middle.plot(wx, wy, marker=".", lw=1, label=f"{label} p{int(q * 100)}")
    if windows:
        p99 = [w["e2e_ms"].get("p99", math.nan) for w in windows]
        middle.step(
            [w["started"] for w in windows] + [windows[-1]["ended"]],
            [*p99, p99[-1]],
            where="post",
            color="black",
            lw=1.5,
            label="end to end p99 (soak window)",
        )
    middle.set_ylabel("latency (ms, 5 s windows)")
    middle.set_yscale("log")
    middle.legend(loc="upper left", fontsize="small")
    groups = sorted({g for row in pipeline for g, v in row["lag"].items() if v})
    for group in groups:
        lags.plot(
            [r["t"] for r in pipeline],
            [r["lag"].get(group, 0) for r in pipeline],
            lw=1,
            label=f"lag {group}",
        )
    services = sorted({s for row in pipeline for s, v in row["backlog"].items() if v})
    for service in services:
        lags.plot(
            [r["t"] for r in pipeline],
            [r["backlog"].get(service, 0) for r in pipeline],
            linestyle="--",
            lw=1,
            label=f"outbox {service}",
        )
    lags.set_ylabel("records behind (symlog)")
    lags.set_yscale("symlog", linthresh=10)
    if groups or services:
        lags.legend(loc="upper left", fontsize="x-small")
    names = sorted({k.rsplit(".", 1)[0] for row in processes for k in row if k.endswith("cpu_pct")})
    for name in names:
        cpu.plot(
            [r["t"] for r in processes],
            [r.get(f"{name}.cpu_pct") or 0 for r in processes],
            lw=1,
            label=name,
        )
    cpu.set_ylabel("CPU % of one core")
    if names:
        cpu.legend(loc="upper left", fontsize="x-small", ncol=4)
    held = sorted({k.rsplit(".", 1)[0] for row in processes for k in row if k.endswith("rss_mb")})
    for name in held:
        memory.plot(
            [r["t"] for r in processes],
            [r.get(f"{name}.rss_mb") for r in processes],
            lw=1,
            label=name,
        )
    memory.set_ylabel("memory MB (PSS)")
    memory.set_xlabel("seconds since start")
    if held:
        memory.legend(loc="upper left", fontsize="x-small", ncol=4)
    for axis in axes:
        for n, phase in enumerate(phases):
            axis.axvspan(phase["started"], phase["ended"], color=f"C{n % 10}", alpha=0.06)
        for since, until, _label in spans:
            axis.axvspan(since, until, fill=False, hatch="//", edgecolor="grey", lw=0, alpha=0.3)
    for phase in phases:
        top.annotate(
            phase["name"],
            (phase["started"], 1.0),
            xycoords=("data", "axes fraction"),
            fontsize="x-small",
            va="top",
            rotation=90,
        )
    for since, _until, label in spans:
        top.annotate(
            label, (since, 0.5), xycoords=("data", "axes fraction"), fontsize="x-small", va="top"
        )
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
