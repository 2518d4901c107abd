"""The publisher takes teams every pass and units at most every 2 s once they are drained."""

from __future__ import annotations

from scoring.use_cases import UnitCadence


def test_units_wait_for_the_interval_after_a_pass_drained_them() -> None:
    cadence = UnitCadence(interval=2.0)
    assert not cadence.teams_only(10.0)  # the first pass takes everything
    cadence.passed(started=10.0, teams_only=False, taken=120, limit=2000)
    assert cadence.teams_only(10.2)
    assert cadence.teams_only(11.9)
    assert not cadence.teams_only(12.0)


def test_a_teams_only_pass_does_not_postpone_the_units() -> None:
    cadence = UnitCadence(interval=2.0)
    cadence.passed(started=0.0, teams_only=False, taken=5, limit=2000)
    cadence.passed(started=1.0, teams_only=True, taken=5, limit=2000)
    assert not cadence.teams_only(2.0)


def test_units_stay_due_while_a_full_pass_leaves_a_backlog() -> None:
    cadence = UnitCadence(interval=2.0)
    cadence.passed(started=0.0, teams_only=False, taken=2000, limit=2000)
    assert not cadence.teams_only(0.2)
