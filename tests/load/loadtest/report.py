"""The load test's JSON report and PNG chart under reports/."""

from __future__ import annotations

import json
import math
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
    return [x * width for x in xs], [percentiles(buckets[x])[f"p{int(q * 100)}"] for x in xs]


def write(
    report: dict[str, Any],
    *,
    directory: Path,
    name: str,
    accepted_per_second: dict[int, int],
    acceptance: list[tuple[float, float]],
    end_to_end: list[tuple[float, float]],
    pipeline: list[dict[str, Any]],
) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / f"{name}.json"
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str))
    png_path = directory / f"{name}.png"
    figure, (top, middle, bottom) = plt.subplots(3, 1, figsize=(11, 10), sharex=True)
    seconds = sorted(accepted_per_second)
    top.plot(seconds, [accepted_per_second[s] for s in seconds], label="accepted events/s")
    top.set_ylabel("events/s")
    top.legend(loc="upper left")
    for label, points in (("acceptance", acceptance), ("end to end", end_to_end)):
        for q in (0.5, 0.99):
            xs, ys = windowed_p(points, q)
            middle.plot(xs, ys, label=f"{label} p{int(q * 100)}")
    middle.set_ylabel("latency (ms)")
    middle.set_yscale("log")
    middle.legend(loc="upper left")
    groups = sorted({g for row in pipeline for g in row["lag"]})
    for group in groups:
        bottom.plot(
            [r["t"] for r in pipeline],
            [r["lag"].get(group, 0) for r in pipeline],
            label=f"lag {group}",
        )
    services = sorted({s for row in pipeline for s in row["backlog"]})
    for service in services:
        bottom.plot(
            [r["t"] for r in pipeline],
            [r["backlog"].get(service, 0) for r in pipeline],
            linestyle="--",
            label=f"outbox {service}",
        )
    bottom.set_ylabel("records")
    bottom.set_xlabel("seconds since start")
    bottom.legend(loc="upper left", fontsize="small")
    figure.suptitle(report.get("title", "CDT national rollup load test"))
    figure.tight_layout()
    figure.savefig(png_path, dpi=100)
    plt.close(figure)
    return json_path, png_path
