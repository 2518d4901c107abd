"""The README's configuration table and the code's settings must agree."""

from __future__ import annotations

import re
from pathlib import Path

from common.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]


def documented_variables() -> set[str]:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    first_cells = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    return {name for cell in first_cells for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", cell)}


def test_every_common_setting_is_documented() -> None:
    names = {
        (field.alias or name).upper()
        for name, field in ServiceSettings.model_fields.items()
        if name not in {"service_name", "http_port"}  # per service: *_PORT rows
    }
    missing = names - documented_variables()
    assert not missing, f"README configuration table lacks {sorted(missing)}"


def test_documented_variables_exist() -> None:
    known = {(f.alias or n).upper() for n, f in ServiceSettings.model_fields.items()}
    known |= {"CDT_INFRA", "CDT_CACHE_DIR", "CDT_FAULT_POINTS"}  # read by devstack / faults
    known |= {f"{s}_PORT" for s in ("TEAMS", "ACTIVITIES", "SCORING", "NOTIFICATIONS")}
    unknown = documented_variables() - known
    assert not unknown, f"README documents variables the code does not read: {sorted(unknown)}"
