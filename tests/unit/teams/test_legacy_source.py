"""The 63-province units and their conversion, from the `vietnamadminunits` package."""

from __future__ import annotations

from collections import Counter
from functools import cache

from teams.cli import _parser
from teams.legacy_source import LAST_DAY, LegacyUnit, load_legacy_units, registry_codes
from teams.units_source import current_units


@cache
def units() -> dict[str, LegacyUnit]:
    return {u.code: u for u in load_legacy_units(current_units())}


def test_63_provinces_their_districts_and_communes_under_prefixed_codes() -> None:
    levels = Counter(u.level for u in units().values())
    assert levels == {"province": 63, "district": 696, "commune": 10_035}
    assert all(code.startswith("L-") for code in units())
    assert units()["L-02"].name == "Tỉnh Hà Giang"
    assert all(u.row()["valid_to"] == LAST_DAY for u in units().values())


def test_parents_precede_children() -> None:
    seen: set[str] = set()
    for unit in load_legacy_units(current_units()):
        assert unit.parent_code is None or unit.parent_code in seen
        seen.add(unit.code)


def test_every_successor_is_a_current_unit_of_the_registry() -> None:
    current = {u["code"]: u for u in current_units()}
    for unit in units().values():
        if unit.level == "commune":
            assert unit.replaced_by, unit.code
        for new in unit.replaced_by:
            wanted = "province" if unit.level == "province" else "commune"
            assert current[new]["level"] == wanted


def test_old_provinces_merged_into_new_ones() -> None:
    assert units()["L-02"].replaced_by == ("08",)  # Hà Giang into Tuyên Quang
    assert units()["L-95"].replaced_by == ("96",)  # Bạc Liêu into Cà Mau
    assert units()["L-08"].replaced_by == ("08",)


def test_a_split_commune_lists_its_default_successor_first() -> None:
    # Two old communes named Tân Thạnh (Hậu Giang, Sóc Trăng) were each split between today's
    # Xã Tân Thạnh (31666) and Xã Trường Thành (31288), each with its own default.
    assert units()["L-31666"].replaced_by == ("31666", "31288")
    assert units()["L-31268"].replaced_by == ("31288", "31666")


def test_successors_match_the_registry_by_name_where_the_packages_disagree_on_codes() -> None:
    # vietnamadminunits gives Phường Láng 00199; the registry (vietnam-provinces) 00187.
    current = current_units()
    ward = {"provinceCode": "01", "wardCode": "00199", "ward": "Phường Láng"}
    assert registry_codes([ward], current) == {"00199": "00187"}
    spelled = {"provinceCode": "66", "wardCode": "24412", "ward": "Xã M'Drắk"}
    assert registry_codes([spelled], current)["24412"].isdigit()


def test_the_cli_imports_the_legacy_units_by_name() -> None:
    args = _parser().parse_args(["--source", "vietnamadminunits-legacy"])
    assert args.source == "vietnamadminunits-legacy"
