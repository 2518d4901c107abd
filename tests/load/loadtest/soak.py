"""`--soak MINUTES`: does anything grow while the offered load stays constant?

A leak, a backlog that creeps up or a table that slows every write shows up only over time, so
the soak phase is cut into windows (`--soak-window`, 60 s) and each window gives the consumer
lag per group (mean and max of the 1 s samples), the memory per process (mean) and the e2e
percentiles of the events accepted in it. A series is judged flat when neither the change from
the first to the last window nor the growth of its least-squares line over the soak (slope ×
the time between the first and last window) exceeds its bound:

- consumer lag (mean, per group): max(1,000 records, 10 s of offered events, 50 % of the first
  window);
- memory (PSS, per service process: teams, activities, scoring, notifications; PostgreSQL's and
  Kafka's fill their caches and the load generator keeps every latency, so theirs are reported,
  not judged): max(50 MB, 10 % of the first window);
- e2e p99: max(250 ms, 25 % of the first window).

Pure functions over what the run sampled; the verdict needs at least 2 windows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tests.load.loadtest.report import percentiles

JUDGED_PROCESSES = ("teams", "activities", "scoring", "notifications")


@dataclass(frozen=True)
class Bound:
    """A series may grow by max(`floor`, `share` × its first window)."""

    floor: float
    share: float

    def of(self, first: float) -> float:
        return max(self.floor, self.share * abs(first))


RSS = Bound(floor=50.0, share=0.10)
P99 = Bound(floor=250.0, share=0.25)
LAG_SHARE, LAG_FLOOR, LAG_SECONDS_OF_LOAD = 0.5, 1_000.0, 10.0

HELP = (
    "one long phase of MINUTES at --rate (or the sustained rate the ramp finds) instead of the "
    "--rates phases; the report cuts it into --soak-window windows (lag per group, memory per "
    "process, e2e p99) and states whether each stayed flat: neither the last-minus-first change "
    "nor the least-squares growth over the soak may exceed max(1,000 records, 10 s of offered "
    "events, 50%% of the first window) for a group's mean lag, max(50 MB, 10%%) for a service's "
    "memory, max(250 ms, 25%%) for e2e p99"
)


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (0 for fewer than 2 points)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


def _mean(values: Iterable[float]) -> float | None:
    found = list(values)
    return round(sum(found) / len(found), 1) if found else None


def windows(
    *,
    started: float,
    ended: float,
    width: float,
    end_to_end: list[tuple[float, float]],
    pipeline: list[dict[str, Any]],
    processes: list[dict[str, Any]],
    accepted_per_second: dict[int, int],
) -> list[dict[str, Any]]:
    """The soak cut into full windows of `width` s (a last partial one shorter than 90 % of a
    window is left out); times are seconds since the run's start, like every other series."""
    count = int((ended - started) / width + 0.1)
    e2e_by: dict[int, list[float]] = {}
    for t, ms in end_to_end:
        if started <= t < started + count * width:
            e2e_by.setdefault(int((t - started) // width), []).append(ms)
    result = []
    for n in range(count):
        since, until = started + n * width, started + (n + 1) * width
        rows = [r for r in pipeline if since <= r["t"] < until]
        groups = sorted({g for r in rows for g in r["lag"]})
        samples = [s for s in processes if since <= float(s["t"] or 0) < until]
        names = sorted({k.rsplit(".", 1)[0] for s in samples for k in s if k.endswith(".rss_mb")})
        accepted = sum(v for s, v in accepted_per_second.items() if since <= s < until)
        e2e = percentiles(e2e_by.get(n, []))
        result.append(
            {
                "window": n + 1,
                "started": round(since, 1),
                "ended": round(until, 1),
                "minute": round((since + width / 2 - started) / 60, 2),  # the window's middle
                "accepted_per_s": round(accepted / width, 1),
                "e2e_ms": {k: e2e[k] for k in ("count", "p50", "p99") if k in e2e},
                "lag_mean": {
                    g: v
                    for g in groups
                    if (v := _mean(r["lag"].get(g, 0) for r in rows)) is not None
                },
                "lag_max": {g: max(r["lag"].get(g, 0) for r in rows) for g in groups},
                "rss_mb": {
                    p: v
                    for p in names
                    if (v := _mean(float(x) for s in samples if (x := s.get(f"{p}.rss_mb"))))
                    is not None
                },
            }
        )
    return result


def _judge(name: str, xs: list[float], ys: list[float], bound: float) -> dict[str, Any]:
    grown = slope(xs, ys) * (xs[-1] - xs[0])
    change = ys[-1] - ys[0]
    return {
        "series": name,
        "first": round(ys[0], 1),
        "last": round(ys[-1], 1),
        "change": round(change, 1),
        "slope_per_min": round(slope(xs, ys), 2),
        "fitted_growth": round(grown, 1),
        "bound": round(bound, 1),
        "flat": change <= bound and grown <= bound,
    }


def _series(
    found: list[dict[str, Any]], key: str, name: str
) -> tuple[list[float], list[float]] | None:
    points = [(w["minute"], w[key].get(name)) for w in found]
    kept = [(x, float(y)) for x, y in points if y is not None]
    if len(kept) < 2:
        return None
    return [x for x, _ in kept], [y for _, y in kept]


def verdict(found: list[dict[str, Any]], rate: float) -> dict[str, Any]:
    """Flat or not, per series (lag per group, memory per service, e2e p99) and overall."""
    if len(found) < 2:
        return {"flat": None, "line": "soak too short to judge: fewer than 2 windows", "checks": []}
    checks: list[dict[str, Any]] = []
    groups = sorted({g for w in found for g in w["lag_mean"]})
    for group in groups:
        if (xy := _series(found, "lag_mean", group)) is not None:
            bound = max(LAG_FLOOR, LAG_SECONDS_OF_LOAD * rate, LAG_SHARE * xy[1][0])
            checks.append({"kind": "lag", **_judge(group, *xy, bound)})
    for process in JUDGED_PROCESSES:
        if (xy := _series(found, "rss_mb", process)) is not None:
            checks.append({"kind": "rss_mb", **_judge(process, *xy, RSS.of(xy[1][0]))})
    if (xy := _series(found, "e2e_ms", "p99")) is not None:
        checks.append({"kind": "e2e_p99_ms", **_judge("e2e p99", *xy, P99.of(xy[1][0]))})
    parts = []
    for kind, label in (("lag", "lag"), ("rss_mb", "memory"), ("e2e_p99_ms", "e2e p99")):
        mine = [c for c in checks if c["kind"] == kind]
        if not mine:
            parts.append(f"{label} unmeasured")
            continue
        grown = [c for c in mine if not c["flat"]]
        worst = max(mine, key=lambda c: c["fitted_growth"] / max(c["bound"], 1e-9))
        if grown:
            parts.append(
                f"{label} GREW ("
                + ", ".join(f"{c['series']} {c['first']:,} -> {c['last']:,}" for c in grown)
                + ")"
            )
        else:
            parts.append(
                f"{label} flat (largest: {worst['series']} {worst['first']:,} -> "
                f"{worst['last']:,}, {worst['slope_per_min']:+,}/min, bound {worst['bound']:,})"
            )
    flat = all(c["flat"] for c in checks) and bool(checks)
    return {
        "flat": flat,
        "line": f"{'FLAT' if flat else 'NOT FLAT'} over {len(found)} windows: " + "; ".join(parts),
        "checks": checks,
    }
