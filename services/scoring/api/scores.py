"""Criteria sets, targets, campaigns, scores, indicators, rankings and recomputes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Path, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.exc import IntegrityError

from common.app import AccessDep, Authorized, RuntimeDep, UowDep
from common.i18n import _, level_name
from common.moments import IsoDate
from common.problems import ProblemError
from common.text import FreeText, NameText
from scoring import adapters, domain, use_cases
from scoring.api.params import (
    MAX_PAGE,
    Code,
    CriteriaVersion,
    Name,
    PeriodField,
    PeriodParam,
    SubjectTypeParam,
    check_period,
)
from scoring.domain import SubjectPeriod

router = APIRouter(tags=["scoring"])


# --------------------------------------------------------------------------- criteria sets


class CriterionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Name
    group: Name
    max_points: Annotated[float, Field(gt=0, le=100)]
    numerator: Annotated[list[Name], Field(min_length=1, max_length=10)]
    denominator: Annotated[list[Name], Field(max_length=10)] = []
    target: Annotated[float, Field(gt=0, le=1e12)]
    basis: Literal["absolute", "per_month", "per_team_month"] = "absolute"
    description: Annotated[FreeText, Field(max_length=500)] = ""


class CriteriaSetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    description: Annotated[FreeText, Field(max_length=2000)] = ""
    provenance: Annotated[FreeText, Field(max_length=4000)] = ""
    criteria: Annotated[list[CriterionIn], Field(min_length=1, max_length=50)]

    @model_validator(mode="after")
    def _sums_to_100(self) -> CriteriaSetIn:
        total = sum(c.max_points for c in self.criteria)
        if abs(total - 100) > 1e-6:
            raise ValueError(f"criteria max_points must sum to 100 (got {total:g})")
        ids = [c.id for c in self.criteria]
        if len(set(ids)) != len(ids):
            raise ValueError("criterion ids must be unique")
        return self


class CriteriaSetOut(BaseModel):
    version: str
    name: str
    active: bool
    created_at: datetime
    activated_at: datetime | None
    description: str
    provenance: str
    criteria: list[dict[str, Any]]


def _criteria_out(row: Any) -> CriteriaSetOut:
    definition = row["definition"]
    return CriteriaSetOut(
        version=row["version"],
        name=row["name"],
        active=row["active"],
        created_at=row["created_at"],
        activated_at=row["activated_at"],
        description=definition.get("description", ""),
        provenance=definition.get("provenance", ""),
        criteria=definition.get("criteria", []),
    )


@router.get("/criteria-sets")
async def list_criteria_sets(uow: UowDep) -> dict[str, Any]:
    rows = await adapters.list_criteria_set_rows(uow.session, limit=MAX_PAGE)
    return {"items": [_criteria_out(r) for r in rows], "next_cursor": None}


@router.get("/criteria-sets/{version}", responses={404: {"description": "unknown version"}})
async def get_criteria_set(version: str, uow: UowDep) -> CriteriaSetOut:
    row = await adapters.criteria_set_row(uow.session, version=version)
    if row is None:
        raise ProblemError(404, "Not Found", _("No criteria set {ref!r}.", ref=version))
    return _criteria_out(row)


@router.post("/criteria-sets", status_code=status.HTTP_201_CREATED, dependencies=[Authorized])
async def create_criteria_set(body: CriteriaSetIn, uow: UowDep) -> CriteriaSetOut:
    existing = await adapters.criteria_set_versions(uow.session)
    version = domain.next_version(body.name, existing)
    candidate = domain.criteria_from_json(version, body.model_dump())
    definition = domain.criteria_to_json(candidate)
    try:
        await adapters.insert_criteria_set(
            uow.session, version=version, name=body.name, definition=definition
        )
        await uow.commit()
    except IntegrityError as exc:
        raise ProblemError(409, "Conflict", "A concurrent create took this version.") from exc
    row = await adapters.criteria_set_row(uow.session, version=version)
    assert row is not None, "the criteria set was just created"
    return _criteria_out(row)


@router.post(
    "/criteria-sets/{version}:activate",
    dependencies=[Authorized],
    responses={404: {"description": "unknown version"}},
)
async def activate_criteria_set(version: str, uow: UowDep) -> dict[str, Any]:
    """Make `version` the published set; every subject with indicators is re-scored with it.

    Scores of the previous version stay stored and queryable with `?criteria_set=`.
    """
    session = uow.session
    await adapters.lock_criteria_sets(session)
    if not await adapters.criteria_set_exists(session, version=version):
        raise ProblemError(404, "Not Found", _("No criteria set {ref!r}.", ref=version))
    await adapters.activate_criteria_set(session, version=version, activated_at=datetime.now(UTC))
    rescoring = await adapters.mark_all_dirty(session)
    await uow.commit()
    return {"version": version, "active": True, "subjects_to_rescore": rescoring}


# --------------------------------------------------------------------------- targets


class TargetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject_type: SubjectTypeParam
    subject_id: Code
    period: PeriodField
    indicator: Name
    value: Annotated[float, Field(gt=0, le=1e12)]


async def _unit_path(uow: UowDep, code: str) -> tuple[str, ...]:
    """The path of a unit of any level, by its code."""
    known = await adapters.admin_unit_path(uow.session, code)
    codes = tuple(c for level in domain.LEVELS if known and (c := known.code_at(level)))
    return codes or (code,)


@router.put("/targets", responses={403: {"description": "a subject outside the caller's units"}})
async def put_target(body: TargetIn, uow: UowDep, access: AccessDep) -> TargetIn:
    """Set the target (chỉ tiêu giao) of one indicator or criterion for a subject and period."""
    path = await adapters.subject_unit_path(
        uow.session, subject_type=body.subject_type, subject_id=body.subject_id
    )
    access.require_unit(path, code=body.subject_id)
    await adapters.upsert_target(
        uow.session,
        subject_type=body.subject_type,
        subject_id=body.subject_id,
        period=body.period,
        indicator=body.indicator,
        value=body.value,
        updated_at=datetime.now(UTC),
    )
    await adapters.mark_dirty(
        uow.session, {(body.subject_type, body.subject_id, body.period): None}
    )
    await uow.commit()
    return body


@router.get("/targets")
async def list_targets(
    uow: UowDep,
    subject_type: SubjectTypeParam,
    subject_id: Annotated[Code, Query()],
    period: PeriodParam,
) -> dict[str, Any]:
    check_period(period)
    key = SubjectPeriod(subject_type, subject_id, period)
    found = await adapters.targets_for(uow.session, [key])
    items = [
        {
            "subject_type": subject_type,
            "subject_id": subject_id,
            "period": period,
            "indicator": name,
            "value": value,
        }
        for name, value in sorted(found[key].items())
    ]
    return {"items": items, "next_cursor": None}


# --------------------------------------------------------------------------- campaigns


class CampaignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Code
    name: Annotated[NameText, Field(min_length=1, max_length=300)]
    start_date: IsoDate
    end_date: IsoDate
    unit_codes: Annotated[list[Code], Field(max_length=5000)] = []

    @model_validator(mode="after")
    def _ordered(self) -> CampaignIn:
        if self.end_date < self.start_date:
            raise ValueError("end_date must not be before start_date")
        return self


class CampaignOut(CampaignIn):
    period: str
    days: int


def _campaign_out(row: Any) -> CampaignOut:
    return CampaignOut(
        id=row["id"],
        name=row["name"],
        start_date=row["start_date"],
        end_date=row["end_date"],
        unit_codes=list(row["unit_codes"]),
        period=f"campaign:{row['id']}",
        days=domain.campaign_days(row["start_date"], row["end_date"]),
    )


@router.post(
    "/campaigns",
    status_code=status.HTTP_201_CREATED,
    responses={
        403: {"description": "a unit outside the caller's units (no units: nationwide)"},
        409: {"description": "duplicate id"},
    },
)
async def create_campaign(body: CampaignIn, uow: UowDep, access: AccessDep) -> CampaignOut:
    if not body.unit_codes:  # a campaign of no unit in particular runs nationwide
        access.require_unit((), code="national")
    for code in body.unit_codes:
        access.require_unit(await _unit_path(uow, code), code=code)
    row = await adapters.insert_campaign(
        uow.session,
        campaign_id=body.id,
        name=body.name,
        start_date=body.start_date,
        end_date=body.end_date,
        unit_codes=body.unit_codes,
    )
    if row is None:
        raise ProblemError(409, "Conflict", _("A campaign with id {ref!r} exists.", ref=body.id))
    await uow.commit()
    return _campaign_out(row)


@router.get("/campaigns")
async def list_campaigns(
    uow: UowDep,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> dict[str, Any]:
    rows = await adapters.list_campaign_rows(uow.session, after=cursor, limit=limit + 1)
    items = [_campaign_out(r) for r in rows[:limit]]
    return {"items": items, "next_cursor": items[-1].id if len(rows) > limit else None}


# --------------------------------------------------------------------------- scores


async def _subject_known(uow: UowDep, subject_type: str, subject_id: str) -> bool:
    if subject_type == "national":
        return subject_id == domain.NATIONAL_ID
    return await adapters.subject_exists(
        uow.session, subject_type=subject_type, subject_id=subject_id
    )


async def _require_subject(uow: UowDep, subject_type: str, subject_id: str) -> None:
    if not await _subject_known(uow, subject_type, subject_id):
        raise ProblemError(
            404,
            "Not Found",
            _(
                "No {subject_type} {ref!r} has indicators.",
                subject_type=level_name(subject_type),
                ref=subject_id,
            ),
        )


@router.get(
    "/scores/{subject_type}/{subject_id}", responses={404: {"description": "unknown subject"}}
)
async def get_score(
    subject_type: SubjectTypeParam,
    subject_id: Annotated[str, Path(max_length=64)],
    uow: UowDep,
    period: PeriodParam,
    criteria_set: Annotated[CriteriaVersion | None, Query()] = None,
) -> dict[str, Any]:
    """The published score (as in `scoring.score-updated.v1`), or a live one if none yet."""
    check_period(period)
    await _require_subject(uow, subject_type, subject_id)
    session = uow.session
    chosen = (
        await adapters.criteria_set(session, criteria_set)
        if criteria_set
        else await adapters.active_criteria_set(session)
    )
    if chosen is None:
        raise ProblemError(404, "Not Found", _("No criteria set {ref!r}.", ref=criteria_set))
    row = await adapters.score_row(
        session,
        subject_type=subject_type,
        subject_id=subject_id,
        period=period,
        criteria_set=chosen.version,
    )
    if row is not None:
        return {
            "subject_type": subject_type,
            "subject_id": subject_id,
            "period": period,
            "criteria_set": chosen.version,
            "score": row["score"],
            "max_score": row["max_score"],
            "rank": row["rank"],
            "rank_of": row["rank_of"],
            "components": row["components"],
            "indicators": row["indicators"],
            "version": row["version"],
            "as_of_event_time": row["as_of_event_time"],
            "computed_at": row["computed_at"],
        }
    key = SubjectPeriod(subject_type, subject_id, period)
    [evaluation] = await use_cases.evaluate(session, [key], chosen)
    return use_cases.score_payload(
        key=key,
        criteria_set=chosen.version,
        score=evaluation.result.score,
        max_score=evaluation.result.max_score,
        components=use_cases.components_json(evaluation.result),
        indicators=evaluation.indicators,
        rank=None,
        version=0,
        as_of=None,
        computed_at=datetime.now(UTC),
    )


@router.get(
    "/scores/{subject_type}/{subject_id}/history",
    responses={404: {"description": "unknown subject"}},
)
async def get_score_history(
    subject_type: SubjectTypeParam,
    subject_id: Annotated[str, Path(max_length=64)],
    *,
    uow: UowDep,
    period: PeriodParam,
    criteria_set: Annotated[CriteriaVersion | None, Query()] = None,
    cursor: Annotated[str | None, Query(max_length=12, pattern=r"^[0-9]+$")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> dict[str, Any]:
    """How the score moved: every published version (newest first), each as it was
    published, kept for `SCORING_HISTORY_MONTHS`."""
    check_period(period)
    await _require_subject(uow, subject_type, subject_id)
    chosen = criteria_set or (await adapters.active_criteria_set(uow.session)).version
    rows = await adapters.score_versions(
        uow.session,
        key=SubjectPeriod(subject_type, subject_id, period),
        criteria_set=chosen,
        before_version=int(cursor) if cursor else None,
        limit=limit + 1,
    )
    return {
        "subject_type": subject_type,
        "subject_id": subject_id,
        "period": period,
        "criteria_set": chosen,
        "items": [dict(row) for row in rows[:limit]],
        "next_cursor": str(rows[limit - 1]["version"]) if len(rows) > limit else None,
    }


@router.get(
    "/indicators/{subject_type}/{subject_id}",
    responses={404: {"description": "unknown subject"}},
)
async def get_indicators(
    subject_type: SubjectTypeParam,
    subject_id: Annotated[str, Path(max_length=64)],
    uow: UowDep,
    period: PeriodParam,
) -> dict[str, Any]:
    check_period(period)
    await _require_subject(uow, subject_type, subject_id)
    key = SubjectPeriod(subject_type, subject_id, period)
    found = await adapters.indicators_for(uow.session, [key])
    values = {**found[key], **domain.derived_indicators(found[key])}
    return {
        "subject_type": subject_type,
        "subject_id": subject_id,
        "period": period,
        "indicators": {k: values[k] for k in sorted(values)},
    }


@router.get("/rankings")
async def get_rankings(
    *,
    uow: UowDep,
    level: SubjectTypeParam,
    period: PeriodParam,
    parent: Annotated[Code | None, Query(description="unit code; none = all")] = None,
    criteria_set: Annotated[CriteriaVersion | None, Query()] = None,
    cursor: Annotated[str | None, Query(max_length=12, pattern=r"^[0-9]+$")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> dict[str, Any]:
    """Subjects of `level` under `parent`, best score first (competition rank, ties share)."""
    check_period(period)
    chosen = criteria_set or (await adapters.active_criteria_set(uow.session)).version
    offset = int(cursor or 0)
    rows = await adapters.ranking_rows(
        uow.session,
        level=level,
        period=period,
        criteria_set=chosen,
        parent=parent,
        limit=limit + 1,
        offset=offset,
    )
    items = [
        {
            "subject_type": level,
            "subject_id": r[0],
            "score": r[1],
            "version": r[2],
            "as_of_event_time": r[3],
            "rank": r[4],
            "rank_of": r[5],
        }
        for r in rows[:limit]
    ]
    return {
        "level": level,
        "parent": parent,
        "period": period,
        "criteria_set": chosen,
        "items": items,
        "next_cursor": str(offset + limit) if len(rows) > limit else None,
    }


# --------------------------------------------------------------------------- recompute


@router.post(
    "/recompute",
    dependencies=[Authorized],
    status_code=status.HTTP_202_ACCEPTED,
    responses={202: {"description": "the job, new or the one already queued or running"}},
)
async def post_recompute(runtime: RuntimeDep, response: Response) -> dict[str, Any]:
    """Rebuild every indicator from stored facts (same code path as the consumer) and re-score,
    as a background job: one at a time; a second call while one runs returns that one."""
    job, created = await use_cases.start_recompute(runtime)
    response.headers["Location"] = f"/v1/recompute/{job['id']}"
    return {**use_cases.job_view(job, now=datetime.now(UTC)), "created": created}


@router.get(
    "/recompute/{job_id}",
    dependencies=[Authorized],
    responses={404: {"description": "no such job"}},
)
async def get_recompute(job_id: UUID, uow: UowDep) -> dict[str, Any]:
    """A recompute job: state, facts done of total, facts per second and the time left."""
    job = await adapters.recompute_job(uow.session, job_id)
    if job is None:
        raise ProblemError(404, "Not Found", "no recompute job with this id")
    return use_cases.job_view(job, now=datetime.now(UTC))
