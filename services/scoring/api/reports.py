"""Score reports of a unit for a period, live (`GET /v1/reports/scores`); a round's frozen report
is served by `api.rounds` through the same rendering."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import FileResponse, StreamingResponse
from starlette.background import BackgroundTask

from common.app import RuntimeDep, UowDep
from common.i18n import Language, _, level_name
from common.problems import ProblemError, RequestLanguage
from common.runtime import ServiceRuntime
from scoring import adapters
from scoring.api import render
from scoring.api.params import Code, CriteriaVersion, PeriodParam, check_period
from scoring.domain.reports import (
    LEVELS_TOP_DOWN,
    ReportRow,
    ReportScope,
    Summary,
)

router = APIRouter(tags=["reports"])

ReportFormat = Literal["json", "csv", "xlsx"]
UnitLevelParam = Literal["national", "province", "district", "commune", "village"]
RowLevelParam = Literal["province", "district", "commune", "village", "team"]
MEDIA_TYPES = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
FormatQuery = Annotated[ReportFormat, Query(alias="format")]


def file_responses(*formats: str) -> dict[int | str, dict[str, Any]]:
    """The 200 of a route that also answers as a file (`?format=`), beside its JSON."""
    content = {
        MEDIA_TYPES[name].partition(";")[0]: {"schema": {"type": "string", "format": "binary"}}
        for name in formats
    }
    return {200: {"description": "JSON, or the file `format` asks for", "content": content}}


RowsQuery = Annotated[
    list[RowLevelParam] | None,
    Query(description="levels to list (default: the unit's own and every level below it)"),
]


def download_headers(filename: str, *, extension: str, language: Language) -> dict[str, str]:
    """The headers of a file to save: its name (a campaign period's `:` cannot be in one)
    and its language."""
    return {
        "Content-Disposition": f'attachment; filename="{filename.replace(":", "-")}.{extension}"',
        "Content-Language": language.value,
        "Vary": "Accept-Language",
    }


def xlsx_response(path: str, *, headers: dict[str, str]) -> FileResponse:
    """A workbook written to a temporary file, removed once sent."""
    return FileResponse(
        path,
        media_type=MEDIA_TYPES["xlsx"],
        headers=headers,
        background=BackgroundTask(os.unlink, path),
    )


def levels_under(level: str, rows: list[RowLevelParam] | None) -> tuple[str, ...]:
    """The levels a report of a `level` unit lists: those asked for, at or below the unit."""
    below = LEVELS_TOP_DOWN[LEVELS_TOP_DOWN.index(level) :]
    if rows is None:
        return below
    outside = sorted(set(rows) - set(below))
    if outside:
        raise ProblemError.invalid(
            "rows",
            f"not under {level}",
            detail=_(
                "A {level} report cannot list {levels}.",
                level=level_name(level),
                levels=", ".join(outside),
            ),
        )
    return tuple(level for level in below if level in rows)


async def report_response(
    runtime: ServiceRuntime,
    *,
    scope: ReportScope,
    levels: tuple[str, ...],
    report_format: ReportFormat,
    language: Language,
    summary: Summary,
    head: dict[str, Any],
    filename: str,
    appendix: render.Appendix | None = None,
) -> Response:
    """The report in the asked format and language, its rows streamed from the database."""
    async with runtime.sessions() as session:
        criteria = await adapters.criteria_set(session, scope.criteria_set)
    criterion_ids = [c.id for c in criteria.criteria] if criteria else []

    async def rows() -> AsyncIterator[ReportRow]:
        async with runtime.sessions() as session:
            async for row in adapters.report_rows(session, scope, levels=levels):
                yield row

    headers = download_headers(filename, extension=report_format, language=language)
    if report_format == "csv":
        body = render.csv_stream(rows(), criteria=criterion_ids, language=language)
        return StreamingResponse(body, media_type=MEDIA_TYPES["csv"], headers=headers)
    if report_format == "json":
        body = render.json_stream(rows(), head=head, summary=summary)
        headers.pop("Content-Disposition")
        return StreamingResponse(body, media_type=MEDIA_TYPES["json"], headers=headers)
    path = await render.xlsx_file(
        rows(),
        criteria=criterion_ids,
        language=language,
        summary=summary,
        title=filename,
        appendix=appendix,
    )
    return xlsx_response(path, headers=headers)


@router.get(
    "/reports/scores",
    responses={**file_responses("csv", "xlsx"), 404: {"description": "unknown unit"}},
)
async def get_score_report(
    *,
    runtime: RuntimeDep,
    uow: UowDep,
    level: UnitLevelParam,
    unit_code: Annotated[Code, Query()],
    period: PeriodParam,
    criteria_set: Annotated[CriteriaVersion | None, Query()] = None,
    rows: RowsQuery = None,
    report_format: FormatQuery = "json",
    language: RequestLanguage,
) -> Response:
    """A unit's live report for a period: every subject under it with names, score, each
    criterion's points, the main indicators and its rank among its siblings; JSON, CSV or
    XLSX; headers in Vietnamese unless `Accept-Language` prefers English."""
    check_period(period)
    session = uow.session
    if not await adapters.unit_known(session, level=level, unit_code=unit_code):
        raise ProblemError(
            404,
            "Not Found",
            _("No {level} {ref!r} is known.", level=level_name(level), ref=unit_code),
        )
    chosen = (
        await adapters.criteria_set(session, criteria_set)
        if criteria_set
        else await adapters.active_criteria_set(session)
    )
    if chosen is None:
        raise ProblemError(404, "Not Found", _("No criteria set {ref!r}.", ref=criteria_set))
    scope = ReportScope(
        level=level, unit_code=unit_code, period=period, criteria_set=chosen.version
    )
    summary = await adapters.unit_summary(session, level=level, unit_code=unit_code)
    return await report_response(
        runtime,
        scope=scope,
        levels=levels_under(level, rows),
        report_format=report_format,
        language=language,
        summary=summary,
        head={
            "level": level,
            "unit_code": unit_code,
            "period": period,
            "criteria_set": chosen.version,
            "round": None,
        },
        filename=f"cdt-{level}-{unit_code}-{period}",
    )
