"""The current (since 1 July 2025) two-tier units from the `vietnam-provinces` package.

Codes are the official statistical codes as strings, zero-padded the way the General Statistics
Office writes them: provinces on two digits (Đồng Tháp "82", Hà Nội "01"), communes / wards on
five ("28261").
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

SOURCE_NAME = "vietnam-provinces"
TWO_TIER_SINCE = date(2025, 7, 1)


def province_code(code: int) -> str:
    return f"{code:02d}"


def commune_code(code: int) -> str:
    return f"{code:05d}"


def _nested_json() -> Path:
    import vietnam_provinces

    path: Path = vietnam_provinces.NESTED_DIVISIONS_JSON_PATH
    return path


def package_version() -> str:
    import vietnam_provinces

    return str(vietnam_provinces.__version__)


def current_units(nested: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Provinces first, then their communes: parents always precede children."""
    data = nested if nested is not None else json.loads(_nested_json().read_text("utf-8"))
    provinces: list[dict[str, Any]] = []
    communes: list[dict[str, Any]] = []
    for province in data:
        p_code = province_code(int(province["code"]))
        provinces.append(_unit(p_code, province["name"], "province", None))
        for ward in province.get("wards", []):
            communes.append(_unit(commune_code(int(ward["code"])), ward["name"], "commune", p_code))
    return provinces + communes


def _unit(code: str, name: str, level: str, parent: str | None) -> dict[str, Any]:
    return {
        "code": code,
        "name": name,
        "level": level,
        "parent_code": parent,
        "valid_from": TWO_TIER_SINCE,
        "valid_to": None,
    }
