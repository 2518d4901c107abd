"""The publisher takes teams every pass and units at most every 2 s once they are drained; the
background lane every pass, or at most every 5 s while a consumer has a backlog; the rest between
passes gives a consumer that is behind half the process, and none to a drain it cannot help."""

from __future__ import annotations

from scoring.use_cases import MAX_REST_SECONDS, BackgroundCadence, UnitCadence, rest_after_pass


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


def test_the_background_lane_goes_every_pass_while_the_consumers_keep_up() -> None:
    cadence = BackgroundCadence(interval=5.0)
    assert all(cadence.due(t / 10, backlogged=False) for t in range(20))


def test_the_background_lane_waits_for_the_interval_while_a_consumer_is_behind() -> None:
    cadence = BackgroundCadence(interval=5.0)
    assert cadence.due(0.0, backlogged=True)  # once at once: never starved by a long backlog
    assert not cadence.due(0.2, backlogged=True)
    assert not cadence.due(4.9, backlogged=True)
    assert cadence.due(5.0, backlogged=True)
    assert not cadence.due(5.2, backlogged=True)
    assert cadence.due(5.4, backlogged=False)  # caught up: every pass again


def test_a_full_pass_is_followed_at_once_while_the_consumers_keep_up() -> None:
    assert rest_after_pass(interval=0.2, took=1.5, full=True, consumers_behind=False) == 0.0


def test_a_partial_pass_waits_for_the_interval_while_the_consumers_keep_up() -> None:
    assert rest_after_pass(interval=0.2, took=1.5, full=False, consumers_behind=False) == 0.2


def test_a_consumer_behind_gets_as_long_as_the_pass_took_within_bounds() -> None:
    assert rest_after_pass(interval=0.2, took=0.7, full=True, consumers_behind=True) == 0.7
    assert rest_after_pass(interval=0.2, took=0.05, full=True, consumers_behind=True) == 0.2
    rest = rest_after_pass(interval=0.2, took=30.0, full=False, consumers_behind=True)
    assert rest == MAX_REST_SECONDS
