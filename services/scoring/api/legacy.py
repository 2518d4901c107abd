"""The score of the area that was an old (63-province) province (`GET /v1/reports/legacy-province`):
today's communes that make up its area (`domain.legacy`), their indicators summed, and that sum
scored like any unit's, with the active criteria set (or the one asked for)."""

from __future__ import annotations

import csv
import io
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel

from common.app import UowDep
from common.i18n import Language, _
from common.problems import ProblemError, RequestLanguage
from scoring import adapters, use_cases
from scoring.api.params import Code, CriteriaVersion, PeriodParam, check_period
from scoring.api.reports import download_headers, file_responses
from scoring.use_cases.legacy import legacy_area

router = APIRouter(tags=["reports"])
FormatQuery = Annotated[Literal["json", "csv"], Query(alias="format")]


class OldProvince(BaseModel):
    code: str
    name: str


class AreaCommune(BaseModel):
    code: str
    name: str
    province_code: str | None
    indicators: dict[str, float]


class LegacyProvinceReport(BaseModel):
    old_province: OldProvince
    period: str
    criteria_set: str
    communes: list[AreaCommune]
    indicators: dict[str, float]
    score: float
    max_score: float
    components: list[dict[str, Any]]


@router.get(
    "/reports/legacy-province/{code}",
    response_model=LegacyProvinceReport,
    responses={**file_responses("csv"), 404: {"description": "unknown old province"}},
)
async def legacy_province_report(
    *,
    uow: UowDep,
    code: Annotated[Code, Path(description="the old province: `L-` + its code, e.g. L-02")],
    period: PeriodParam,
    language: RequestLanguage,
    criteria_set: Annotated[CriteriaVersion | None, Query()] = None,
    report_format: FormatQuery = "json",
) -> Any:
    """The old province's area in today's communes, their indicators summed and scored the
    way a unit's are (default targets: no target is assigned to an old province)."""
    check_period(period)
    session = uow.session
    name = await adapters.legacy_province_name(session, code)
    if name is None:
        raise ProblemError(404, "Not Found", _("No old province {code!r} is known.", code=code))
    chosen = (
        await adapters.criteria_set(session, criteria_set)
        if criteria_set
        else await adapters.active_criteria_set(session)
    )
    if chosen is None:
        raise ProblemError(404, "Not Found", _("No criteria set {ref!r}.", ref=criteria_set))
    area = await legacy_area(session, old_province=code, period=period, criteria=chosen)
    report = LegacyProvinceReport(
        old_province=OldProvince(code=code, name=name),
        period=period,
        criteria_set=chosen.version,
        communes=[AreaCommune(**vars(c)) for c in area.communes],
        indicators=area.indicators,
        score=area.result.score,
        max_score=area.result.max_score,
        components=use_cases.components_json(area.result),
    )
    if report_format == "csv":
        return _csv(report, language=language)
    return report


def _csv(report: LegacyProvinceReport, *, language: Language) -> Response:
    """One row per commune, then the area's total with its score."""
    names = sorted({n for c in report.communes for n in c.indicators} | set(report.indicators))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["code", "name", "province_code", "score", *names])
    for commune in report.communes:
        row = [commune.indicators.get(n, 0.0) for n in names]
        writer.writerow([commune.code, commune.name, commune.province_code, "", *row])
    totals = [report.indicators.get(n, 0.0) for n in names]
    writer.writerow([report.old_province.code, report.old_province.name, "", report.score, *totals])
    filename = f"cdt-legacy-{report.old_province.code}-{report.period}"
    headers = download_headers(filename, extension="csv", language=language)
    return Response(
        "\ufeff" + out.getvalue(), media_type="text/csv; charset=utf-8", headers=headers
    )
