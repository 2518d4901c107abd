"""The area of an old (63-province) province in today's communes, from the legacy crosswalk the
teams topics carry: a legacy unit's `replaced_by` lists the current communes its area became, the
default successor first. Pure.

A current commune formed from communes of two old provinces belongs to exactly one of them, so
the 63 old provinces partition the current communes and their figures add up to the nation's:
it belongs to the old province most of its default predecessors came from (old communes, or
island districts without communes, whose default successor it is); when none names it as their
default, to the old province most of its predecessors came from; a tie goes to the lower code.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Predecessor:
    """A legacy unit below province level and the current communes its area became."""

    code: str
    old_province: str
    successors: tuple[str, ...]  # the default first


def owners(predecessors: Iterable[Predecessor]) -> dict[str, str]:
    """Current commune -> the old province whose area it counts in (the rule above)."""
    defaults: dict[str, Counter[str]] = {}
    any_part: dict[str, Counter[str]] = {}
    for unit in predecessors:
        for index, commune in enumerate(unit.successors):
            any_part.setdefault(commune, Counter())[unit.old_province] += 1
            if index == 0:
                defaults.setdefault(commune, Counter())[unit.old_province] += 1
    return {commune: _most(defaults.get(commune) or votes) for commune, votes in any_part.items()}


def _most(votes: Counter[str]) -> str:
    """The most voted; among equals, the lowest code."""
    return min(votes, key=lambda province: (-votes[province], province))


def area_of(old_province: str, predecessors: Iterable[Predecessor]) -> list[str]:
    """The current communes that make up the old province's area, in code order.

    `predecessors` must hold every legacy unit naming any commune the old province's units
    became, whatever their old province (the rival claims decide the shared communes)."""
    return sorted(c for c, owner in owners(predecessors).items() if owner == old_province)


def summed(indicators: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Indicators of several subjects added up, as a unit's are over its children."""
    total: dict[str, float] = {}
    for values in indicators:
        for name, value in values.items():
            total[name] = total.get(name, 0.0) + value
    return total
