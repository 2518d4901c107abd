"""The committed XLSX import templates are the ones the CSV templates make."""

from __future__ import annotations

import io

import openpyxl
import pytest

from devstack import templates


@pytest.mark.parametrize("name", templates.NAMES)
def test_the_committed_xlsx_template_is_current(name: str) -> None:
    committed = (templates.TEMPLATES / f"{name}.xlsx").read_bytes()
    assert committed == templates.render(name), "stale: run python -m devstack.templates"


@pytest.mark.parametrize("name", templates.NAMES)
def test_every_column_is_text_and_holds_what_the_csv_holds(name: str) -> None:
    sheet = openpyxl.load_workbook(io.BytesIO(templates.render(name))).worksheets[0]
    rows = [[cell.value or "" for cell in row] for row in sheet.iter_rows()]
    assert rows == templates.csv_rows(name)
    written = {cell.number_format for row in sheet.iter_rows() for cell in row if cell.value}
    columns = {dimension.number_format for dimension in sheet.column_dimensions.values()}
    assert written == columns == {"@"}  # the cells a person fills in are text cells too
    spans = sum(d.max - d.min + 1 for d in sheet.column_dimensions.values())  # type: ignore[operator]
    assert spans == len(rows[0])
