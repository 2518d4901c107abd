"""The XLSX import templates, written from the CSV ones under `docs/templates/`.

`python -m devstack.templates` rewrites `units.xlsx`, `teams.xlsx` and `members.xlsx` from the
CSV templates of the same name (one source for the headers and the example row); `--check`
exits 1 when one is stale (the suite runs the same comparison). Every column is a text column:
Excel would otherwise read a code like `01` or a phone like `0912345678` as a number and drop
its leading zero, and turn a date into a serial number.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from datetime import datetime
from pathlib import Path

import xlsxwriter

TEMPLATES = Path(__file__).resolve().parents[2] / "docs" / "templates"
NAMES = ("units", "teams", "members")
# A fixed creation time: the same CSV always makes the same bytes, so drift can be checked.
CREATED = datetime(2026, 1, 1)


def csv_rows(name: str) -> list[list[str]]:
    text = (TEMPLATES / f"{name}.csv").read_text(encoding="utf-8-sig")
    return [row for row in csv.reader(io.StringIO(text)) if row]


def render(name: str) -> bytes:
    rows = csv_rows(name)
    out = io.BytesIO()
    workbook = xlsxwriter.Workbook(out, {"in_memory": True})
    workbook.set_properties({"created": CREATED})
    text = workbook.add_format({"num_format": "@"})
    header = workbook.add_format({"num_format": "@", "bold": True, "bg_color": "#DDEBF7"})
    sheet = workbook.add_worksheet(name)
    sheet.freeze_panes(1, 0)
    for column, title in enumerate(rows[0]):
        width = max(len(title), *(len(row[column]) for row in rows[1:] if column < len(row)))
        sheet.set_column(column, column, min(width + 2, 60), text)
        sheet.write_string(0, column, title, header)
    for index, row in enumerate(rows[1:], start=1):
        for column, value in enumerate(row):
            if value:
                sheet.write_string(index, column, value, text)
    workbook.close()
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The XLSX import templates")
    parser.add_argument("--check", action="store_true", help="exit 1 if one is stale")
    args = parser.parse_args(argv)
    stale = []
    for name in NAMES:
        path = TEMPLATES / f"{name}.xlsx"
        content = render(name)
        if args.check:
            if not path.exists() or path.read_bytes() != content:
                stale.append(str(path))
        else:
            path.write_bytes(content)
    if stale:
        print(f"stale: {', '.join(stale)}: run python -m devstack.templates", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
