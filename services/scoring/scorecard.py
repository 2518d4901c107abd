"""Scoring many subject-periods at once: the criteria set applied column-wise (numpy).

`domain.score` states the rule for one subject-period; `score_all` computes exactly the same
numbers for a whole publication pass, one array operation per criterion instead of a Python
loop per subject and criterion. Pure: no I/O.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import orjson

from common.contracts.activities import SKILLS
from scoring.domain import Component, CriteriaSet, ScoreResult, period_months

Floats = npt.NDArray[np.float64]
SKILLS_TAUGHT = "skills_taught"
_SKILL_INDICATORS = tuple(f"activities_skill_{skill}" for skill in SKILLS)
# Beyond this magnitude a value × 10**digits may not hold the rounded integer exactly.
_EXACT_LIMIT = 2.0**52


@dataclass(frozen=True, slots=True)
class ScoreRequest:
    """One subject-period to score: its indicators, target overrides and period length."""

    indicators: Mapping[str, float]
    period: str
    targets: Mapping[str, float]
    campaign_days: int | None = None


@dataclass(frozen=True)
class _Plan:
    """Where each criterion reads its numbers, worked out once per criteria set."""

    columns: tuple[str, ...]  # stored indicators read, `teams` first
    numerators: tuple[tuple[int, ...], ...]  # per criterion, column indices
    denominators: tuple[tuple[int, ...], ...]
    targets: Floats
    max_points: Floats
    bases: tuple[str, ...]
    max_score: float


@functools.lru_cache(maxsize=8)
def _plan(criteria_set: CriteriaSet) -> _Plan:
    columns: dict[str, int] = {"teams": 0}
    derived = {SKILLS_TAUGHT: _SKILL_INDICATORS}

    def indices(names: tuple[str, ...]) -> tuple[int, ...]:
        for name in names:
            for stored in derived.get(name, (name,)):
                columns.setdefault(stored, len(columns))
        return tuple(-1 if name == SKILLS_TAUGHT else columns[name] for name in names)

    numerators = tuple(indices(c.numerator) for c in criteria_set.criteria)
    denominators = tuple(indices(c.denominator) for c in criteria_set.criteria)
    return _Plan(
        columns=tuple(columns),
        numerators=numerators,
        denominators=denominators,
        targets=np.array([c.target for c in criteria_set.criteria], dtype=np.float64),
        max_points=np.array([c.max_points for c in criteria_set.criteria], dtype=np.float64),
        bases=tuple(c.basis for c in criteria_set.criteria),
        max_score=criteria_set.max_score,
    )


@dataclass(frozen=True)
class _Columns:
    """A pass's numbers, one row per request, rounded as `domain.score` rounds them."""

    points: Floats
    achieved: Floats
    targets: Floats
    totals: Floats


def score_all(criteria_set: CriteriaSet, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
    """`domain.score` of every request, computed column-wise; the same floats, bit for bit."""
    if not requests:
        return []
    return _results(criteria_set, _compute(criteria_set, requests))


@dataclass(frozen=True)
class ScoredPass:
    """What the publisher stores and sends of a pass: each score, and its components as the
    JSON text `components_json` of its `ScoreResult` would give (the same values), without a
    tuple per component or a dictionary per component in between (a third of a pass's Python)."""

    scores: list[float]
    max_score: float
    components: list[str]


def score_pass(criteria_set: CriteriaSet, requests: Sequence[ScoreRequest]) -> ScoredPass:
    if not requests:
        return ScoredPass(scores=[], max_score=criteria_set.max_score, components=[])
    columns = _compute(criteria_set, requests)
    return ScoredPass(
        scores=columns.totals.tolist(),
        max_score=criteria_set.max_score,
        components=_component_documents(criteria_set, columns),
    )


def _compute(criteria_set: CriteriaSet, requests: Sequence[ScoreRequest]) -> _Columns:
    plan = _plan(criteria_set)
    values = np.array(
        [[r.indicators.get(name, 0.0) for name in plan.columns] for r in requests],
        dtype=np.float64,
    ).reshape(len(requests), len(plan.columns))
    skills_taught = _skills_taught(values, plan)
    months = np.array(
        [period_months(r.period, campaign_days=r.campaign_days) for r in requests],
        dtype=np.float64,
    )
    scales = {
        "absolute": np.ones(len(requests)),
        "per_month": months,
        "per_team_month": np.maximum(values[:, 0], 1.0) * months,
    }
    criteria = criteria_set.criteria
    achieved = np.empty((len(requests), len(criteria)))
    targets = np.empty((len(requests), len(criteria)))
    for index, criterion in enumerate(criteria):
        numerator = _total(values, skills_taught, plan.numerators[index])
        if plan.denominators[index]:
            denominator = _total(values, skills_taught, plan.denominators[index])
            numerator = np.divide(
                numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0
            )
        achieved[:, index] = numerator
        targets[:, index] = criterion.target * scales[plan.bases[index]]
    _apply_overrides(criteria_set, requests, targets)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratios = np.where(targets > 0, np.minimum(achieved / targets, 1.0), 1.0)
    points = round_half_even(ratios * plan.max_points, 4)
    totals = np.zeros(len(requests))
    for index in range(len(criteria)):  # in order, as Python's `sum` adds them
        totals += points[:, index]
    return _Columns(
        points=points,
        achieved=round_half_even(achieved, 6),
        targets=round_half_even(targets, 6),
        totals=round_half_even(totals, 2),
    )


def _skills_taught(values: Floats, plan: _Plan) -> Floats:
    present = [plan.columns.index(n) for n in _SKILL_INDICATORS if n in plan.columns]
    if not present:
        return np.zeros(values.shape[0])
    taught: Floats = np.count_nonzero(values[:, present] > 0, axis=1).astype(np.float64)
    return taught


def _total(values: Floats, skills_taught: Floats, columns: tuple[int, ...]) -> Floats:
    """Σ of the columns, added left to right from 0 as `domain.achieved` does."""

    def column(index: int) -> Floats:
        return skills_taught if index < 0 else values[:, index]

    if len(columns) == 1:
        return column(columns[0]).copy()
    total = np.zeros(values.shape[0])
    for index in columns:
        total += column(index)
    return total


def _apply_overrides(
    criteria_set: CriteriaSet, requests: Sequence[ScoreRequest], targets: Floats
) -> None:
    """Targets set by `PUT /targets` (few subjects have any): by criterion id, or by the
    indicator name of a single-indicator criterion."""
    for row, request in enumerate(requests):
        if not request.targets:
            continue
        for index, criterion in enumerate(criteria_set.criteria):
            target = request.targets.get(criterion.id)
            if target is None and len(criterion.numerator) == 1 and not criterion.denominator:
                target = request.targets.get(criterion.numerator[0])
            if target is not None:
                targets[row, index] = target


def round_half_even(values: Floats, digits: int) -> Floats:
    """`round(x, digits)` of every element, exactly as Python rounds a float.

    Python rounds the exact binary value; `rint(x × 10**digits) / 10**digits` gives the same
    float unless the scaled value lies within rounding error of a half (or is too large or not
    finite): those few are rounded by Python itself.
    """
    scale = 10.0**digits
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = values * scale
        rounded = np.rint(scaled) / scale
        whole = values == np.floor(values)
        distance = np.abs(scaled - np.floor(scaled) - 0.5)
        doubtful = ~whole & (
            ~np.isfinite(scaled)
            | (np.abs(scaled) >= _EXACT_LIMIT)
            | (distance <= np.maximum(np.abs(scaled), 1.0) * 1e-9)
        )
    out = np.where(whole, values, rounded)
    for position in zip(*np.nonzero(doubtful), strict=True):
        out[position] = round(float(values[position]), digits)
    return out


def _results(criteria_set: CriteriaSet, columns: _Columns) -> list[ScoreResult]:
    names = [(c.id, c.group, c.max_points) for c in criteria_set.criteria]
    max_score = criteria_set.max_score
    return [
        ScoreResult(
            score=total,
            max_score=max_score,
            components=tuple(
                Component(cid, group, p, max_points, v, t)
                for (cid, group, max_points), p, v, t in zip(
                    names, row_points, row_values, row_targets, strict=True
                )
            ),
        )
        for total, row_points, row_values, row_targets in zip(
            columns.totals.tolist(),
            columns.points.tolist(),
            columns.achieved.tolist(),
            columns.targets.tolist(),
            strict=True,
        )
    ]


@functools.lru_cache(maxsize=8)
def _components_template(criteria_set: CriteriaSet) -> str:
    """The components' JSON with a `%r` for each number that varies (points, value, target),
    in the key order of `use_cases.components_json`."""
    parts = [
        "{"
        f'"criterion":{orjson.dumps(c.id).decode()},"group":{orjson.dumps(c.group).decode()},'
        f'"points":%r,"max_points":{orjson.dumps(c.max_points).decode()},"value":%r,"target":%r'
        "}"
        for c in criteria_set.criteria
    ]
    return "[" + ",".join(parts) + "]"


def _component_documents(criteria_set: CriteriaSet, columns: _Columns) -> list[str]:
    """Each row's components as JSON text. A float's `repr` is its shortest round-trip form,
    as orjson writes it (only the exponent of a very large or small number is spelt
    differently, e.g. `1e-06` for `1e-6`: the same number); a row holding a number JSON cannot
    spell (inf, nan) goes through orjson, which writes null for it, as before."""
    template = _components_template(criteria_set)
    # per row: points, value and target of each criterion, interleaved as the template wants
    numbers = np.stack([columns.points, columns.achieved, columns.targets], axis=2)
    rows = numbers.reshape(numbers.shape[0], -1)
    finite = np.logical_and.reduce(np.isfinite(rows), axis=1)
    out = []
    for row, ok in zip(rows.tolist(), finite.tolist(), strict=True):
        if ok:
            out.append(template % tuple(row))
        else:
            out.append(orjson.dumps(_component_dicts(criteria_set, row)).decode())
    return out


def _component_dicts(criteria_set: CriteriaSet, row: list[float]) -> list[dict[str, object]]:
    return [
        {
            "criterion": c.id,
            "group": c.group,
            "points": row[3 * index],
            "max_points": c.max_points,
            "value": row[3 * index + 1],
            "target": row[3 * index + 2],
        }
        for index, c in enumerate(criteria_set.criteria)
    ]
