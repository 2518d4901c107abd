"""A batch of scores is judged in rounds that give the outcome of judging them one by one."""

from __future__ import annotations

from datetime import UTC, datetime

from common.contracts.scoring import ScoreUpdated
from notifications.domain import ScoreKey, judging_rounds, score_key


def _score(subject_id: str, period: str, version: int) -> ScoreUpdated:
    return ScoreUpdated(
        subject_type="team",
        subject_id=subject_id,
        period=period,
        criteria_set="default@1",
        score=50,
        version=version,
        computed_at=datetime(2026, 12, 4, tzinfo=UTC),
    )


def _keys(rounds: list[list[tuple[ScoreKey, ScoreUpdated]]]) -> list[list[tuple[str, str, int]]]:
    return [[(s.subject_id, s.period, s.version) for _, s in judged] for judged in rounds]


def _keyed(batch: list[ScoreUpdated]) -> list[tuple[ScoreKey, ScoreUpdated]]:
    return [(score_key(s), s) for s in batch]


def test_distinct_keys_make_one_round() -> None:
    batch = [_score("a", "2026-12", 1), _score("b", "2026-12", 4), _score("a", "2026", 2)]
    assert _keys(judging_rounds(_keyed(batch), comparison={})) == [
        [("a", "2026-12", 1), ("b", "2026-12", 4), ("a", "2026", 2)]
    ]


def test_versions_of_one_key_are_judged_in_order_one_round_each() -> None:
    batch = [_score("a", "2026-12", 1), _score("b", "2026-12", 1), _score("a", "2026-12", 2)]
    batch.append(_score("a", "2026-12", 3))
    assert _keys(judging_rounds(_keyed(batch), comparison={})) == [
        [("a", "2026-12", 1), ("b", "2026-12", 1)],
        [("a", "2026-12", 2)],
        [("a", "2026-12", 3)],
    ]


def test_a_score_comes_after_the_earlier_score_of_the_period_it_compares_with() -> None:
    november, december = _score("a", "2026-11", 5), _score("a", "2026-12", 1)
    batch = [november, december]
    comparison = {score_key(december): ScoreKey("team", "a", "2026-11")}
    assert _keys(judging_rounds(_keyed(batch), comparison=comparison)) == [
        [("a", "2026-11", 5)],
        [("a", "2026-12", 1)],
    ]
    # compared with a period that comes later in the batch: nothing to wait for
    assert len(judging_rounds(_keyed([december, november]), comparison=comparison)) == 1
