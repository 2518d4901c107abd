"""Score reports rendered for people: JSON, CSV (UTF-8 with a BOM, so Excel reads Vietnamese
right) and XLSX (a summary sheet, then one sheet per level with a frozen header row, column
widths and numbers as numbers). Rows stream in; none of the three holds the whole report."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from xlsxwriter import Workbook
from xlsxwriter.worksheet import Worksheet

from common.i18n import Language, Message
from scoring.domain.reports import (
    LEVEL_LABELS,
    SUMMARY_HEADERS,
    SUMMARY_SHEET,
    Column,
    ReportRow,
    Summary,
    report_columns,
)

CHUNK = 2_000  # rows rendered per step: the event loop gets its turn between chunks
BOM = "\ufeff"


async def _chunks(rows: AsyncIterator[ReportRow]) -> AsyncIterator[list[ReportRow]]:
    """The rows in chunks, read one chunk ahead: PostgreSQL and the driver prepare the next
    chunk while this one is rendered (a national sheet spends ~a third of its time reading)."""
    ahead: asyncio.Queue[list[ReportRow] | BaseException | None] = asyncio.Queue(maxsize=1)

    async def read() -> None:
        try:
            chunk: list[ReportRow] = []
            async for row in rows:
                chunk.append(row)
                if len(chunk) >= CHUNK:
                    await ahead.put(chunk)
                    chunk = []
            if chunk:
                await ahead.put(chunk)
            await ahead.put(None)
        except Exception as error:  # handed to the renderer, which raises it
            await ahead.put(error)

    reader = asyncio.create_task(read())
    try:
        while (item := await ahead.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


async def csv_stream(
    rows: AsyncIterator[ReportRow], *, criteria: Sequence[str], language: Language
) -> AsyncIterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    buffer.write(BOM)
    writer.writerow([column.label.render(language) for column in report_columns(criteria)])
    async for chunk in _chunks(rows):
        # csv writes None as an empty field
        writer.writerows(row.cells(criteria, language) for row in chunk)
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode()


async def json_stream(
    rows: AsyncIterator[ReportRow], *, head: dict[str, Any], summary: Summary
) -> AsyncIterator[bytes]:
    """`{...head, "summary": {...}, "items": [...]}`, the items written as they come."""
    opening = orjson.dumps({**head, "summary": summary.as_json()})
    yield opening[:-1] + b', "items": ['
    first = True
    async for chunk in _chunks(rows):
        parts = [orjson.dumps(row.as_json()) for row in chunk]
        yield (b"" if first else b",") + b",".join(parts)
        first = False
    yield b"]}"


async def xlsx_file(
    rows: AsyncIterator[ReportRow],
    *,
    criteria: Sequence[str],
    language: Language,
    summary: Summary,
    title: str,
    appendix: Appendix | None = None,
) -> str:
    """The report's workbook in a temporary file (its path; the caller removes it): the
    summary, a sheet per level, and `appendix` (a round's commendation candidates) last."""

    async def write(book: Workbook, bold: Any) -> None:
        _summary_sheet(book, summary=summary, language=language, title=title, bold=bold)
        # A sheet per level, so its rows leave the level column out; cells by column type.
        columns = report_columns(criteria)[1:]
        writers: list[Callable[[int, int, Any], Any]] = []
        level: str | None = None
        line = 0
        async for chunk in _chunks(rows):
            for row in chunk:
                if row.level != level:
                    level, line = row.level, 1
                    sheet = _table_sheet(
                        book, LEVEL_LABELS[level].render(language), columns, language, bold=bold
                    )
                    writers = [
                        sheet.write_number if column.numeric else sheet.write_string
                        for column in columns
                    ]
                for index, cell in enumerate(row.cells(criteria, language)[1:]):
                    if cell is not None:
                        writers[index](line, index, cell)
                line += 1
        if appendix is not None:
            sheet = _table_sheet(
                book, appendix.sheet.render(language), appendix.columns, language, bold=bold
            )
            for line, cells in enumerate(appendix.rows, start=1):
                _write_row(sheet, line, cells)

    return await _workbook_file("cdt-report-", write)


async def table_xlsx(
    *, sheet_name: str, title: str, columns: Sequence[Column], rows: Sequence[Sequence[object]],
    language: Language,
) -> str:  # fmt: skip
    """A small table (one line per unit) under a title, as a workbook in a temporary file."""

    async def write(book: Workbook, bold: Any) -> None:
        sheet = _table_sheet(book, sheet_name, columns, language, bold=bold, title=title)
        for line, cells in enumerate(rows, start=3):
            _write_row(sheet, line, cells)

    return await _workbook_file("cdt-table-", write)


@dataclass(frozen=True)
class Appendix:
    sheet: Message
    columns: Sequence[Column]
    rows: Sequence[Sequence[object]]


async def _workbook_file(prefix: str, write: Callable[[Workbook, Any], Awaitable[None]]) -> str:
    """A workbook `write` fills (given it and the bold header format), in a temporary file
    whose path is returned; XlsxWriter's constant-memory mode flushes each row as written
    (rows go in order), and the file is removed if anything fails."""
    handle, path = tempfile.mkstemp(prefix=prefix, suffix=".xlsx")
    os.close(handle)
    try:
        book = Workbook(path, {"constant_memory": True, "in_memory": False})
        await write(book, book.add_format({"bold": True, "text_wrap": True, "valign": "top"}))
        await asyncio.to_thread(book.close)
    except BaseException:
        os.unlink(path)
        raise
    return path


def _table_sheet(
    book: Workbook,
    name: str,
    columns: Sequence[Column],
    language: Language,
    *,
    bold: Any,
    title: str | None = None,
) -> Worksheet:
    """A sheet with its column widths and a frozen header row: the first row, or the third
    under a title."""
    sheet = book.add_worksheet(name[:31])
    header = 0
    if title is not None:
        sheet.write_string(0, 0, title, bold)
        header = 2
    for index, column in enumerate(columns):
        sheet.set_column(index, index, column.width)
        sheet.write_string(header, index, column.label.render(language), bold)
    sheet.freeze_panes(header + 1, 0)
    return sheet


def _summary_sheet(
    book: Workbook, *, summary: Summary, language: Language, title: str, bold: Any
) -> None:
    sheet = book.add_worksheet(SUMMARY_SHEET.render(language))
    sheet.set_column(0, 0, 36)
    sheet.set_column(1, 2, 14)
    sheet.write_string(0, 0, title, bold)
    for index, header in enumerate(SUMMARY_HEADERS):
        sheet.write_string(2, index, header.render(language), bold)
    for line, cells in enumerate(summary.lines(language), start=3):
        _write_row(sheet, line, list(cells))


def _write_row(sheet: Worksheet, line: int, cells: Sequence[object]) -> None:
    for index, cell in enumerate(cells):
        if cell is None:
            continue
        if isinstance(cell, bool) or not isinstance(cell, int | float):
            sheet.write_string(line, index, str(cell))
        else:
            sheet.write_number(line, index, cell)
