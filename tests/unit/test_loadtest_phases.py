"""The load test's soak verdict and import slice, on made-up series (no stack): a soak whose
memory or latency creeps up must not be called flat, one that only jitters must be."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from datetime import datetime
from typing import Any

import pytest

from tests.load.loadtest import importer, soak
from tests.load.loadtest.fixture import SCALES, plan
from tests.load.loadtest.generator import ActivityFactory, Mix, TeamRef
from tests.load.loadtest.run import calibration_ratios


def made_up_soak(
    *, rss_per_s: float = 0.0, p99_per_s: float = 0.0, lag_per_s: float = 0.0, seconds: int = 240
) -> list[dict[str, Any]]:
    r = random.Random(7)
    e2e = [(t / 10, 900 + 100 * r.random() + p99_per_s * t / 10) for t in range(seconds * 10)]
    pipeline = [
        {
            "t": float(t),
            "lag": {"scoring/a": r.randint(0, 300), "notifications/b": int(500 + lag_per_s * t)},
            "backlog": {},
        }
        for t in range(seconds)
    ]
    processes: list[dict[str, Any]] = [
        {
            "t": float(t),
            "scoring.rss_mb": 200 + r.random(),
            "notifications.rss_mb": 150 + rss_per_s * t,
        }
        for t in range(seconds)
    ]
    return soak.windows(
        started=0.0,
        ended=float(seconds),
        width=60,
        end_to_end=e2e,
        pipeline=pipeline,
        processes=processes,
        accepted_per_second=Counter({s: 200 for s in range(seconds)}),
    )


def test_a_steady_soak_is_flat() -> None:
    found = made_up_soak()
    assert [w["window"] for w in found] == [1, 2, 3, 4]
    assert found[0]["accepted_per_s"] == 200
    verdict = soak.verdict(found, rate=200)
    assert verdict["flat"] is True, verdict["line"]
    assert verdict["line"].startswith("FLAT over 4 windows")
    assert {c["kind"] for c in verdict["checks"]} == {"lag", "rss_mb", "e2e_p99_ms"}


@pytest.mark.parametrize(
    ("growth", "grown"),
    [
        ({"rss_per_s": 0.5}, "notifications"),  # +120 MB over 4 minutes
        ({"p99_per_s": 3.0}, "e2e p99"),  # +720 ms
        ({"lag_per_s": 50.0}, "notifications/b"),  # +12,000 records
    ],
)
def test_a_creeping_series_is_not_flat(growth: dict[str, float], grown: str) -> None:
    verdict = soak.verdict(made_up_soak(**growth), rate=200)
    assert verdict["flat"] is False
    assert [c["series"] for c in verdict["checks"] if not c["flat"]] == [grown]
    assert "NOT FLAT" in verdict["line"] and grown in verdict["line"]


def test_one_window_is_too_short_to_judge() -> None:
    verdict = soak.verdict(made_up_soak(seconds=60), rate=200)
    assert verdict["flat"] is None


def test_slope_is_least_squares() -> None:
    assert soak.slope([0, 1, 2, 3], [1, 3, 5, 7]) == pytest.approx(2.0)
    assert soak.slope([1], [5]) == 0.0


def test_the_import_slice_is_new_rows_beside_the_fixture() -> None:
    fixture = plan(SCALES["smoke"], 42)
    rows = importer.slice_plan(fixture, teams=50, tag="LI20260101-000000")
    again = importer.slice_plan(fixture, teams=50, tag="LI20260101-000000")
    assert rows.teams == again.teams and rows.team_sizes == again.team_sizes
    villages = {code for code, _ in fixture.villages}
    assert all(code.startswith("LI20260101-000000T") for code, _ in rows.teams)
    assert all(unit in villages for _, unit in rows.teams)
    assert all(4 <= size <= 9 for size in rows.team_sizes)
    members = list(rows.member_rows())
    assert len(members) == rows.members and '"code": "LI20260101-000000M0000000"' in members[0]
    assert importer.default_teams(74_422) == 7_442 and importer.default_teams(305) == 1_000


def test_calibration_ratios() -> None:
    phase = {
        "accepted_events_per_s": 100.0,
        "scored_events_per_s": 50.0,
        "kafka_records_per_accepted_event": 8.0,
    }
    ratios = calibration_ratios(
        phase, {"kafka_records_per_s": 10_000, "postgres_copy_rows_per_s": 100_000}
    )
    assert ratios == {
        "accepted_over_kafka": 0.01,
        "kafka_writes_over_kafka": 0.08,
        "accepted_over_copy": 0.001,
        "scored_over_copy": 0.0005,
    }
    assert calibration_ratios(phase, {"skipped": True}) == {}


def test_a_phase_window_starts_after_every_event_made_before_it() -> None:
    """A phase counts the stored events that occur after its mark: the previous phase's last
    events, made a moment before, must fall before it (or they are counted as strays)."""
    teams = {"82": [TeamRef(str(uuid.uuid4()), (str(uuid.uuid4()),), "82")]}
    factory = ActivityFactory(teams_by_province=teams, mix=Mix(), seed=1, campaign_id=None)
    before = [factory.fresh(factory.province()) for _ in range(50)]
    mark = factory.last_occurred_at
    after = [factory.fresh(factory.province()) for _ in range(50)]
    assert all(datetime.fromisoformat(e["occurred_at"]) <= mark for e in before)
    assert all(datetime.fromisoformat(e["occurred_at"]) > mark for e in after)
