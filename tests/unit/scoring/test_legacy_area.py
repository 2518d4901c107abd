"""The area of an old province in today's communes: who owns a commune two old provinces share."""

from __future__ import annotations

from scoring.domain.legacy import Predecessor, area_of, owners, summed


def test_a_shared_commune_goes_where_its_default_predecessors_came_from() -> None:
    # Phường Tân Ninh (Tây Ninh, 25459): old Tây Ninh's wards merged whole, plus a part of
    # old Long An's Phường 4, whose default successor is Phường Long An (27694).
    units = [
        Predecessor("L-25456", "L-72", ("25459",)),
        Predecessor("L-25459", "L-72", ("25459",)),
        Predecessor("L-25462", "L-72", ("25459", "27694")),
        Predecessor("L-27691", "L-80", ("27694", "25459")),
        Predecessor("L-27694", "L-80", ("27694",)),
    ]
    assert owners(units) == {"25459": "L-72", "27694": "L-80"}
    assert area_of("L-72", units) == ["25459"]
    assert area_of("L-80", units) == ["27694"]


def test_the_majority_of_default_predecessors_wins_over_a_larger_split_part() -> None:
    units = [
        Predecessor("L-1", "L-01", ("N1",)),
        Predecessor("L-2", "L-02", ("N9", "N1")),
        Predecessor("L-3", "L-02", ("N9", "N1")),
    ]
    assert owners(units)["N1"] == "L-01"


def test_without_a_default_predecessor_all_parts_vote_and_a_tie_goes_to_the_lower_code() -> None:
    units = [
        Predecessor("L-1", "L-09", ("A", "N")),
        Predecessor("L-2", "L-03", ("B", "N")),
    ]
    assert owners(units)["N"] == "L-03"
    units.append(Predecessor("L-4", "L-09", ("C", "N")))
    assert owners(units)["N"] == "L-09"


def test_every_commune_has_exactly_one_owner() -> None:
    units = [
        Predecessor("L-1", "L-01", ("A", "B")),
        Predecessor("L-2", "L-02", ("B",)),
        Predecessor("L-3", "L-02", ("C", "A")),
    ]
    areas = [area_of(p, units) for p in ("L-01", "L-02")]
    assert sorted(areas[0] + areas[1]) == ["A", "B", "C"]


def test_indicators_add_up() -> None:
    assert summed([{"a": 1.0, "b": 2.0}, {"a": 3.0}, {}]) == {"a": 4.0, "b": 2.0}
