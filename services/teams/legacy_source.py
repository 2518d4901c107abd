"""The units of the 63-province structure and their conversion to the current one, from the
`vietnamadminunits` package (its dataset of old units and its 2025 converter tables).

Legacy units are registered as retired units under `L-` + their official code (`L-02` Hà Giang,
`L-026` a district, `L-00688` a commune): the current structure reused many of those codes, and a
code names one unit across versions. Each carries the crosswalk in `replaced_by`: the current
communes its area became, the package's default successor first (an old province: its new
province).

The package keys units by folded names; the registry keys them by the official codes of the
`vietnam-provinces` package. The two disagree on the code of about a hundred new communes, so a
successor is matched to the registry's commune of the same name in the same province (see
`registry_codes`), not taken by its code.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from importlib.metadata import version
from typing import Any

from common.contracts.teams import LEGACY_PREFIX
from teams.units_source import TWO_TIER_SINCE

SOURCE_NAME = "vietnamadminunits-legacy"
LAST_DAY = date(2025, 6, 30)  # the 63-province structure's last day


def legacy_code(official: str) -> str:
    return f"{LEGACY_PREFIX}{official}"


def package_version() -> str:
    return version("vietnamadminunits")


@dataclass(frozen=True)
class Successor:
    """One new commune an old unit (key `province_district_ward`) became, by package keys."""

    province_key: str
    ward_key: str
    default: bool


@dataclass(frozen=True)
class LegacyUnit:
    code: str
    name: str
    level: str
    parent_code: str | None
    replaced_by: tuple[str, ...]

    def row(self) -> dict[str, Any]:
        """The unit as an import row (`teams.rows.UnitRow`), retired on `LAST_DAY`."""
        return {
            "code": self.code,
            "name": self.name,
            "level": self.level,
            "parent_code": self.parent_code,
            "valid_from": None,
            "valid_to": LAST_DAY,
        }

    def crosswalk(self, new_parents: Mapping[str, str]) -> list[dict[str, Any]]:
        """`unit_crosswalk` rows: one per successor ("merged" into one, "split" into several)."""
        change = "merged" if len(self.replaced_by) == 1 else "split"
        return [
            {
                "old_code": self.code,
                "new_code": new,
                "change": change,
                "effective_on": TWO_TIER_SINCE,
                "old_parent_code": self.parent_code,
                "new_parent_code": new_parents.get(new),
            }
            for new in self.replaced_by
        ]


def name_key(name: str) -> str:
    """A name folded for matching across the two packages, which spell some names differently
    ("Thủy" / "Thuỷ", "M'Drắk" / "M’Drắk", "Chân Mây - Lăng Cô" / "Chân Mây-Lăng Cô")."""
    decomposed = unicodedata.normalize("NFD", name.lower().replace("đ", "d"))
    return "".join(c for c in decomposed if c.isalnum() and not unicodedata.combining(c))


def registry_codes(
    package_wards: Iterable[Mapping[str, str]], current: Sequence[Mapping[str, Any]]
) -> dict[str, str]:
    """Package ward code -> the registry's code of the same commune.

    In order: the registry's commune of the very same name in the province; else the package's
    code, when the registry's commune under it has the same folded name; else the one commune of
    that folded name. Names that fold alike ("Tân Thành" / "Tân Thạnh") are why exact names
    come first. Raises if a ward matches nothing, so a package upgrade cannot go wrong quietly.
    """
    exact: dict[tuple[str, str], str] = {}
    folded: dict[tuple[str, str], list[str]] = {}
    for unit in current:
        if unit["level"] != "commune":
            continue
        name = unicodedata.normalize("NFC", unit["name"])
        exact[(unit["parent_code"], name)] = unit["code"]
        folded.setdefault((unit["parent_code"], name_key(name)), []).append(unit["code"])
    out: dict[str, str] = {}
    for ward in package_wards:
        province, code = ward["provinceCode"], ward["wardCode"]
        same_name = exact.get((province, unicodedata.normalize("NFC", ward["ward"])))
        alike = folded.get((province, name_key(ward["ward"])), [])
        if same_name is not None:
            out[code] = same_name
        elif code in alike:
            out[code] = code
        elif len(alike) == 1:
            out[code] = alike[0]
        else:
            raise ValueError(f"No registry commune matches {ward['ward']!r} ({code}).")
    return out


def successors_by_old_key(
    no_divided: Mapping[str, Mapping[str, Sequence[str]]],
    divided: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]],
) -> dict[str, list[Successor]]:
    """The converter's two tables turned around: old key -> its new communes, default first.
    `no_divided` is new province -> new ward -> the old wards it took whole; `divided` is new
    province -> old ward -> the new wards it was split among, one of them the default."""
    out: dict[str, list[Successor]] = {}
    for province_key, wards in no_divided.items():
        for ward_key, old_keys in wards.items():
            for old_key in old_keys:
                out.setdefault(old_key, []).append(Successor(province_key, ward_key, True))
    for province_key, olds in divided.items():
        for old_key, news in olds.items():
            parts = [
                Successor(province_key, n["newWardKey"], bool(n["isDefaultNewWard"])) for n in news
            ]
            out.setdefault(old_key, []).extend(sorted(parts, key=lambda s: not s.default))
    return out


def legacy_units(
    old_wards: Sequence[Mapping[str, Any]],
    new_wards: Sequence[Mapping[str, Any]],
    provinces: Mapping[str, Sequence[str]],
    successors: Mapping[str, Sequence[Successor]],
    codes: Mapping[str, str],
) -> list[LegacyUnit]:
    """Old provinces, then districts, then communes (parents precede children).

    `old_wards` are the package's legacy rows (a district without communes, an island, is one
    row without a ward); `provinces` is new province key -> old province keys; `codes` maps the
    package's new ward codes to the registry's (`registry_codes`)."""
    new_code = {(w["provinceKey"], w["wardKey"]): codes[w["wardCode"]] for w in new_wards}
    new_province = {w["provinceKey"]: w["provinceCode"] for w in new_wards}
    province_of_old = {old: new_province[new] for new, olds in provinces.items() for old in olds}

    def became(old_key: str) -> tuple[str, ...]:
        found = [new_code[(s.province_key, s.ward_key)] for s in successors.get(old_key, ())]
        return tuple(dict.fromkeys(found))

    units: dict[str, LegacyUnit] = {}
    for row in old_wards:
        province = legacy_code(row["provinceCode"])
        district = legacy_code(row["districtCode"])
        units.setdefault(
            province,
            LegacyUnit(
                province,
                row["province"],
                "province",
                None,
                (province_of_old[row["provinceKey"]],),
            ),
        )
        old_key = f"{row['provinceKey']}_{row['districtKey']}_{row['wardKey'] or ''}"
        units.setdefault(
            district,
            LegacyUnit(
                district,
                row["district"],
                "district",
                province,
                () if row["wardCode"] else became(old_key),
            ),
        )
        if row["wardCode"]:
            code = legacy_code(row["wardCode"])
            units[code] = LegacyUnit(code, row["ward"], "commune", district, became(old_key))
    order = {"province": 0, "district": 1, "commune": 2}
    return sorted(units.values(), key=lambda u: (order[u.level], u.code))


def load_legacy_units(current: Sequence[Mapping[str, Any]]) -> list[LegacyUnit]:
    """The legacy units of the installed package, their successors in the registry's codes."""
    from vietnamadminunits.converter import converter_2025
    from vietnamadminunits.database import query

    old_wards = query(
        "SELECT provinceCode, province, provinceKey, districtCode, district, districtKey,"
        " wardCode, ward, wardKey FROM admin_units_legacy"
    )
    new_wards = query("SELECT provinceCode, provinceKey, wardCode, ward, wardKey FROM admin_units")
    successors = successors_by_old_key(
        converter_2025.DICT_PROVINCE_WARD_NO_DIVIDED, converter_2025.DICT_PROVINCE_WARD_DIVIDED
    )
    return legacy_units(
        old_wards,
        new_wards,
        converter_2025.DICT_PROVINCE,
        successors,
        registry_codes(new_wards, current),
    )
