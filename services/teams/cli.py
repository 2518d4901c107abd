"""`python -m teams import-units`: load administrative units from the command line.

    python -m teams import-units --source vietnam-provinces
    python -m teams import-units --source vietnamadminunits-legacy   (the 63-province units)
    python -m teams import-units --file villages.csv        (or .xlsx / .ndjson / .jsonl)

Writes through the same units of work as the API (state and outbox rows together); the
service's relay publishes the events. Progress goes to stderr, the final report to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from teams.bootstrap import build_runtime
from teams.rows import (
    UNIT_COLUMNS,
    BodyFormatError,
    BodyKind,
    BulkReport,
    UnitRow,
    raw_records,
    spreadsheet_records,
)
from teams.settings import TeamsSettings
from teams.use_cases import apply_units, run_bulk

CHUNK_BYTES = 256 * 1024


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m teams import-units")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--source",
        choices=["vietnam-provinces", "vietnamadminunits-legacy"],
        help="a packaged dataset",
    )
    group.add_argument("--file", type=Path, help="CSV or NDJSON file of units")
    parser.add_argument(
        "--format", choices=["csv", "ndjson", "xlsx"], help="default: from the file extension"
    )
    return parser


def _kind_of(path: Path) -> BodyKind:
    suffix = path.suffix.lower()
    return "csv" if suffix == ".csv" else "xlsx" if suffix == ".xlsx" else "ndjson"


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as handle:
        while chunk := await asyncio.to_thread(handle.read, CHUNK_BYTES):
            yield chunk


def _progress(report: BulkReport) -> None:
    print(
        f"  {report.rows} rows: {report.created} created, {report.updated} updated, "
        f"{report.unchanged} unchanged, {report.rejected} rejected",
        file=sys.stderr,
        flush=True,
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    runtime = build_runtime(TeamsSettings())
    try:
        if runtime.settings.run_migrations:
            await runtime.migrate()
        if args.source:
            from teams.api_units import import_package

            print(f"importing {args.source} ...", file=sys.stderr, flush=True)
            return await import_package(runtime, args.source)
        path: Path = args.file
        kind: BodyKind = args.format or _kind_of(path)
        print(f"importing {path} as {kind} ...", file=sys.stderr, flush=True)
        records = (
            spreadsheet_records(_chunks(path), columns=UNIT_COLUMNS)
            if kind == "xlsx"
            else raw_records(_chunks(path), kind=kind, columns=UNIT_COLUMNS)
        )
        report = await run_bulk(
            runtime,
            records,
            schema=UnitRow,
            apply=apply_units,
            batch_size=TeamsSettings().bulk_batch_size,
            on_progress=_progress,
        )
        return report.as_dict()
    finally:
        await runtime.engine.dispose()
        runtime.tracer_provider.shutdown()


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        result = asyncio.run(run(args))
    except BodyFormatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, ensure_ascii=False, default=str, indent=2))
    return 1 if result.get("rejected") else 0
