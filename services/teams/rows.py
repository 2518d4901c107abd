"""Bulk input: streamed CSV / NDJSON records, XLSX sheets, and the row schemas (no database
or network I/O).

A CSV or NDJSON body is consumed chunk by chunk; only the current batch of rows is ever held in
memory. An XLSX workbook is a zip whose index sits at its end: it is read from a spooled copy,
its first sheet row by row. Rows are numbered from 1 in the order they appear (the header is
not a row; blank lines are skipped and not counted), and that number is what the per-row error
report names.
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import itertools
import json
import tempfile
import unicodedata
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import IO, Annotated, Any, Literal

import openpyxl
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from common.moments import IsoDate
from common.text import NameText
from teams.domain import Affiliation, Role

CSV_TYPES = frozenset({"text/csv", "application/csv"})
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl"})
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
BodyKind = Literal["csv", "ndjson", "xlsx"]
MAX_RECORD_CHARS = 16_384
# An XLSX body is spooled (its zip index sits at its end): in memory up to this size, on disk
# past it; the bulk body limit bounds it either way.
XLSX_SPOOL_IN_MEMORY_BYTES = 8 * 1024 * 1024
XLSX_ROWS_PER_READ = 500
MAX_ERRORS_REPORTED = 1_000
CODE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
PHONE_PATTERN = r"^\+?[0-9]{8,15}$"


class BodyFormatError(ValueError):
    """The body as a whole cannot be read (unknown media type, bad CSV header)."""


def _blank_to_none(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def normalise_phone(value: Any) -> Any:
    value = _blank_to_none(value)
    if isinstance(value, str):
        # People write 0912 345 678 or 0912.345.678: keep the digits (and a leading +).
        return "".join(ch for ch in value if ch.isdigit() or ch == "+")
    return value


Code = Annotated[str, Field(min_length=1, max_length=64, pattern=CODE_PATTERN)]
Text = Annotated[NameText, Field(min_length=1, max_length=300)]
# Constraints sit on the inner `str` so that None (a blank cell) passes untouched.
OptionalText = Annotated[
    Annotated[NameText, Field(max_length=200)] | None, BeforeValidator(_blank_to_none)
]
OptionalDate = Annotated[IsoDate | None, BeforeValidator(_blank_to_none)]
Phone = Annotated[
    Annotated[str, Field(pattern=PHONE_PATTERN)] | None, BeforeValidator(normalise_phone)
]


class RowModel(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)


# A province has no parent; every other level needs one (which must exist, one level up).
_PARENT_BY_LEVEL: dict[str, Any] = {
    "if": {"properties": {"level": {"const": "province"}}},
    "then": {"properties": {"parent_code": {"type": "null"}}},
    "else": {"required": ["parent_code"], "properties": {"parent_code": {"type": "string"}}},
}


class UnitRow(RowModel):
    model_config = ConfigDict(json_schema_extra={"allOf": [_PARENT_BY_LEVEL]})

    code: Code
    name: Text
    level: Literal["province", "district", "commune", "village"]
    parent_code: Annotated[Code | None, BeforeValidator(_blank_to_none)] = None
    valid_from: OptionalDate = None
    valid_to: OptionalDate = None


class TeamRow(RowModel):
    code: Code
    name: Text
    unit_code: Code
    established_on: OptionalDate = None
    decision_no: Annotated[
        Annotated[NameText, Field(max_length=100)] | None, BeforeValidator(_blank_to_none)
    ] = None


class MemberRow(RowModel):
    """Bulk members upsert by their external `code` (required here, unique in the registry)."""

    code: Code
    team_code: Code
    full_name: Annotated[NameText, Field(min_length=1, max_length=200)]
    role: Role = "member"
    affiliation: Affiliation = "other"
    enterprise_name: OptionalText = None
    phone: Phone = None
    joined_on: IsoDate
    left_on: OptionalDate = None
    # Optional: one completed training per row, recorded once (member, course, date).
    training_course: OptionalText = None
    training_completed_on: OptionalDate = None


def header_key(name: str) -> str:
    """A column name as compared: NFC, case-folded, spaces collapsed (so "Họ và tên" and
    "họ và  TÊN" are one column)."""
    return " ".join(unicodedata.normalize("NFC", name).casefold().split())


@dataclass(frozen=True)
class ColumnSet:
    """The columns a bulk file may have: the row schema's field names, and the Vietnamese
    headers people write in a spreadsheet (`HEADERS_VI`), each naming one field."""

    fields: frozenset[str]
    aliases: Mapping[str, str] = field(default_factory=dict)  # header_key(alias) -> field

    @classmethod
    def of(cls, schema: type[BaseModel], aliases: Mapping[str, str] = {}) -> ColumnSet:
        return cls(
            fields=frozenset(schema.model_fields),
            aliases={header_key(alias): name for alias, name in aliases.items()},
        )

    def field_of(self, header: str) -> str | None:
        key = header_key(header)
        return key if key in self.fields else self.aliases.get(key)


# Vietnamese column headers of each import (the templates in docs/templates/ use them).
UNIT_HEADERS_VI = {
    "Mã đơn vị": "code",
    "Tên đơn vị": "name",
    "Cấp": "level",
    "Mã đơn vị cấp trên": "parent_code",
    "Hiệu lực từ ngày": "valid_from",
    "Hiệu lực đến ngày": "valid_to",
}
TEAM_HEADERS_VI = {
    "Mã tổ": "code",
    "Tên tổ": "name",
    "Mã đơn vị": "unit_code",
    "Ngày thành lập": "established_on",
    "Số quyết định": "decision_no",
}
MEMBER_HEADERS_VI = {
    "Mã thành viên": "code",
    "Mã tổ": "team_code",
    "Họ và tên": "full_name",
    "Vai trò": "role",
    "Thành phần": "affiliation",
    "Tên doanh nghiệp": "enterprise_name",
    "Số điện thoại": "phone",
    "Ngày tham gia": "joined_on",
    "Ngày rời tổ": "left_on",
    "Khóa tập huấn": "training_course",
    "Ngày hoàn thành tập huấn": "training_completed_on",
}


UNIT_COLUMNS = ColumnSet.of(UnitRow, UNIT_HEADERS_VI)
TEAM_COLUMNS = ColumnSet.of(TeamRow, TEAM_HEADERS_VI)
MEMBER_COLUMNS = ColumnSet.of(MemberRow, MEMBER_HEADERS_VI)


@dataclass(frozen=True)
class RowError:
    row: int
    field: str | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "field": self.field, "message": self.message}


@dataclass(frozen=True)
class RawRecord:
    row: int
    data: dict[str, Any] | None
    error: str | None = None
    # field -> the column as the file calls it, so errors name what the person wrote
    headers: Mapping[str, str] = field(default_factory=dict)


def row_errors(
    row: int, exc: ValidationError, *, headers: Mapping[str, str] | None = None
) -> list[RowError]:
    # pydantic messages name the rule, never the rejected value (phones must not be echoed).
    named = headers or {}
    errors = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = [str(p) for p in err["loc"]]
        if loc:
            loc[0] = named.get(loc[0], loc[0])
        errors.append(RowError(row=row, field=".".join(loc) or None, message=err["msg"]))
    return errors


def media_kind(content_type: str | None) -> BodyKind:
    media = (content_type or "").split(";")[0].strip().lower()
    if media in CSV_TYPES:
        return "csv"
    if media in NDJSON_TYPES:
        return "ndjson"
    if media == XLSX_TYPE:
        return "xlsx"
    raise BodyFormatError(
        f"Unsupported media type {media or 'none'!r}: send text/csv, application/x-ndjson "
        f"or {XLSX_TYPE}."
    )


class RecordSplitter:
    """Bytes in, complete records out. CSV records may span lines inside quotes."""

    def __init__(self, *, csv_quotes: bool, max_chars: int = MAX_RECORD_CHARS) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._csv_quotes = csv_quotes
        self._max_chars = max_chars
        self._pending: list[str] = []
        self._pending_chars = 0
        self._quotes = 0
        self._started = False
        self._overflow = False

    def feed(self, chunk: bytes) -> Iterator[str | None]:
        """Complete records; None stands for a record that was too long (dropped)."""
        text = self._decoder.decode(chunk)
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        yield from self._split(text)

    def finish(self) -> Iterator[str | None]:
        yield from self._split(self._decoder.decode(b"", final=True))
        if self._pending or self._overflow:
            yield self._take()

    def _split(self, text: str) -> Iterator[str | None]:
        pieces = text.split("\n")
        for index, piece in enumerate(pieces):
            last = index == len(pieces) - 1
            self._append(piece if last else piece + "\n")
            if not last and (not self._csv_quotes or self._quotes % 2 == 0):
                yield self._take()

    def _append(self, piece: str) -> None:
        if not piece:
            return
        if self._csv_quotes:
            self._quotes += piece.count('"')
        if self._overflow:
            return
        self._pending_chars += len(piece)
        if self._pending_chars > self._max_chars:
            # Keep counting quotes to find the record's end, but stop holding its text.
            self._overflow = True
            self._pending.clear()
            return
        self._pending.append(piece)

    def _take(self) -> str | None:
        record = None if self._overflow else "".join(self._pending).rstrip("\r\n")
        self._pending.clear()
        self._pending_chars = 0
        self._quotes = 0
        self._overflow = False
        return record


class RecordParser:
    """Records (text) to numbered raw rows (dicts), per format."""

    def __init__(self, kind: BodyKind, *, columns: ColumnSet) -> None:
        self.kind = kind
        self._columns = columns
        self._header: list[str] | None = None
        self._written: dict[str, str] = {}
        self._row = 0

    @property
    def header_missing(self) -> bool:
        return self._header is None

    def parse(self, record: str | None) -> RawRecord | None:
        if record is not None and not record.strip():
            return None
        if self.kind == "csv" and self._header is None:
            if record is None:
                raise BodyFormatError("The CSV header line is too long.")
            self._header = self._read_header(record)
            return None
        self._row += 1
        if record is None:
            return RawRecord(self._row, None, f"Record longer than {MAX_RECORD_CHARS} characters.")
        if "\ufffd" in record:
            return RawRecord(self._row, None, "Record is not valid UTF-8.")
        return self._csv(record) if self.kind == "csv" else self._json(record)

    def _read_header(self, record: str) -> list[str]:
        try:
            names = next(csv.reader([record], strict=True))
        except csv.Error as exc:  # e.g. a stray carriage return or quote in the header
            raise BodyFormatError("Malformed CSV header line.") from exc
        return self._header_of(names)

    def _header_of(self, names: Sequence[str]) -> list[str]:
        fields = [self._columns.field_of(name) for name in names]
        unknown = [name.strip() for name, found in zip(names, fields, strict=True) if not found]
        if unknown:
            raise BodyFormatError(f"Unknown columns: {', '.join(unknown)}.")
        header = [found for found in fields if found]
        if len(set(header)) != len(header):
            raise BodyFormatError("Repeated column names.")
        self._written = {found: name.strip() for found, name in zip(header, names, strict=True)}
        return header

    def parse_cells(self, cells: Sequence[object]) -> RawRecord | None:
        """One spreadsheet row: the first non-blank one is the header."""
        values = [cell_text(cell) for cell in cells]
        while values and not values[-1].strip():  # a sheet's rows run to its widest column
            values.pop()
        if not values:
            return None
        if self._header is None:
            self._header = self._header_of(values)
            return None
        self._row += 1
        if len(values) > len(self._header):
            return RawRecord(
                self._row, None, f"Expected {len(self._header)} columns, found {len(values)}."
            )
        values += [""] * (len(self._header) - len(values))
        return RawRecord(
            self._row, dict(zip(self._header, values, strict=True)), headers=self._written
        )

    def _csv(self, record: str) -> RawRecord:
        assert self._header is not None
        try:
            values = next(csv.reader([record], strict=True))
        except csv.Error:
            return RawRecord(self._row, None, "Malformed CSV record (quotes).")
        if len(values) != len(self._header):
            return RawRecord(
                self._row,
                None,
                f"Expected {len(self._header)} fields, found {len(values)}.",
            )
        return RawRecord(
            self._row, dict(zip(self._header, values, strict=True)), headers=self._written
        )

    def _json(self, record: str) -> RawRecord:
        try:
            data = json.loads(record)
        except ValueError:
            return RawRecord(self._row, None, "Malformed JSON.")
        if not isinstance(data, dict):
            return RawRecord(self._row, None, "Each line must be a JSON object.")
        return RawRecord(self._row, data)


def cell_text(value: object) -> str:
    """A cell as the CSV of the same sheet would spell it: dates in ISO 8601, whole numbers
    without a decimal point (codes and phones belong in text cells: a number has lost its
    leading zeros, which the templates prevent by formatting those columns as text)."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time() else value.isoformat()
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def sheet_records(workbook: IO[bytes], *, columns: ColumnSet) -> Iterator[RawRecord]:
    """The rows of a workbook's first sheet, read lazily (openpyxl's read-only mode)."""
    try:
        book = openpyxl.load_workbook(workbook, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises zipfile, KeyError and XML errors alike
        raise BodyFormatError("The body is not a readable XLSX workbook.") from exc
    parser = RecordParser("xlsx", columns=columns)
    try:
        for cells in _sheet_rows(book):
            if (raw := parser.parse_cells(cells)) is not None:
                yield raw
    finally:
        book.close()
    if parser.header_missing:
        raise BodyFormatError("The first sheet has no header row.")


def _sheet_rows(book: Any) -> Iterator[tuple[object, ...]]:
    """A read-only workbook parses its sheet as it is iterated: damage shows up there."""
    rows = book.worksheets[0].iter_rows(values_only=True)
    while True:
        try:
            cells = next(rows)
        except StopIteration:
            return
        except Exception as exc:
            raise BodyFormatError("The first sheet of the workbook cannot be read.") from exc
        yield cells


async def raw_records(
    chunks: AsyncIterator[bytes], *, kind: Literal["csv", "ndjson"], columns: ColumnSet
) -> AsyncIterator[RawRecord]:
    splitter = RecordSplitter(csv_quotes=kind == "csv")
    parser = RecordParser(kind, columns=columns)
    async for chunk in chunks:
        for record in splitter.feed(chunk):
            if (raw := parser.parse(record)) is not None:
                yield raw
    for record in splitter.finish():
        if (raw := parser.parse(record)) is not None:
            yield raw


async def spreadsheet_records(
    chunks: AsyncIterator[bytes], *, columns: ColumnSet
) -> AsyncIterator[RawRecord]:
    """The rows of an XLSX body, parsed off the event loop a few hundred at a time."""
    with tempfile.SpooledTemporaryFile(max_size=XLSX_SPOOL_IN_MEMORY_BYTES) as spool:
        async for chunk in chunks:
            spool.write(chunk)
        spool.seek(0)
        rows = sheet_records(spool, columns=columns)
        while batch := await asyncio.to_thread(
            lambda: list(itertools.islice(rows, XLSX_ROWS_PER_READ))
        ):
            for raw in batch:
                yield raw


@dataclass
class BulkReport:
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[RowError] = field(default_factory=list)
    rejected: int = 0

    def reject(self, errors: list[RowError]) -> None:
        if not errors:
            return
        self.rejected += len({e.row for e in errors})
        room = MAX_ERRORS_REPORTED - len(self.errors)
        self.errors.extend(errors[: max(room, 0)])

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
            "errors": [e.as_dict() for e in self.errors],
            "errors_truncated": self.rejected > len({e.row for e in self.errors}),
        }
