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
    # read by the Kafka access CLI and the local broker
    known |= {"CDT_KAFKA_ADMIN_CONFIG", "CDT_KAFKA_ADMIN_PASSWORD"}
    known.add("CDT_SCHEMA_BASE_URL")  # read once by common.envelope (in every event header)
    known |= {f"{s}_PORT" for s in ("TEAMS", "ACTIVITIES", "SCORING", "NOTIFICATIONS")}
    unknown = documented_variables() - known
    assert not unknown, f"README documents variables the code does not read: {sorted(unknown)}"


def test_readmes_are_reference_not_a_diary() -> None:
    """Development history goes to docs/performance.md as a dated log, not into the READMEs."""
    readmes = [ROOT / "README.md", *sorted((ROOT / "services").glob("*/README.md"))]
    readmes += sorted((ROOT / "services").glob("*/migrations/versions/*.py"))
    diary = re.compile(r"\bstop[ -][0-9]+", re.IGNORECASE)
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in readmes
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if diary.search(line)
    ]
    assert not offenders, f"development-stop mentions: {offenders}"


def test_decision_records_have_their_sections() -> None:
    records = sorted((ROOT / "docs" / "adr").glob("[0-9][0-9][0-9][0-9]-*.md"))
    assert records
    for record in records:
        text = record.read_text()
        for section in ("## Status", "## Context", "## Decision", "## Consequences"):
            assert section in text, f"{record.name} lacks {section}"
