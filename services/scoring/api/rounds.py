"""Evaluation rounds (`/v1/evaluation-rounds`): open, submit, approve, reopen; read one with its
history; its report as the latest (or an earlier) approval froze it."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Body, Path, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

from common.app import Access, AccessDep, RuntimeDep, UowDep
from common.db import UnitOfWork
from common.i18n import _, level_name
from common.moments import IsoDate
from common.problems import ProblemError, RequestLanguage
from common.text import FreeText
from scoring import adapters
from scoring.api import render
from scoring.api.params import (
    MAX_PAGE,
    Code,
    CriteriaVersion,
    PeriodField,
    PeriodParam,
    check_period,
)
from scoring.api.reports import (
    FormatQuery,
    RowLevelParam,
    RowsQuery,
    UnitLevelParam,
    download_headers,
    file_responses,
    levels_under,
    report_response,
    xlsx_response,
)
from scoring.domain import local_time
from scoring.domain.reports import (
    CANDIDATE_COLUMNS,
    CANDIDATES_SHEET,
    LEVEL_LABELS,
    MEMBER_LABEL,
    SCHEDULE_COLUMNS,
    SCHEDULE_SHEET,
    SCHEDULE_STATUS_LABELS,
    ReportScope,
    member_candidate_row,
)
from scoring.domain.rounds import (
    MAX_REASON_LENGTH,
    CommendationRule,
    EvaluationRound,
    RoundAction,
    RoundState,
    TransitionRefused,
)
from scoring.use_cases import rounds

router = APIRouter(prefix="/evaluation-rounds", tags=["evaluation rounds"])


class RoundIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    level: UnitLevelParam
    unit_code: Code
    period: PeriodField
    criteria_set: CriteriaVersion | None = None
    due_on: IsoDate


class MoveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[FreeText | None, Field(max_length=MAX_REASON_LENGTH)] = None


MoveBody = Annotated[MoveIn | None, Body()]
RoundIdPath = Annotated[UUID, Path()]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={
        403: {"description": "the unit is outside the caller's units"},
        409: {"description": "a round already reviews this unit, period and criteria set"},
        422: {"description": "unknown unit, period or criteria set"},
    },
)
async def post_round(
    body: RoundIn, uow: UowDep, response: Response, access: AccessDep
) -> dict[str, Any]:
    """Open a round (state `open`) for a unit and a period under a criteria set (the active one
    unless named)."""
    path = await adapters.subject_unit_path(
        uow.session, subject_type=body.level, subject_id=body.unit_code
    )
    access.require_unit(path, code=body.unit_code)
    check_period(body.period)
    try:
        opened = await rounds.open_round(
            uow,
            level=body.level,
            unit_code=body.unit_code,
            period=body.period,
            criteria_set=body.criteria_set,
            due_on=body.due_on,
            actor=access.actor.subject,  # who opened it: a person's subject, or `operator`
        )
    except rounds.UnknownUnit as error:
        raise ProblemError.invalid("unit_code", f"no {error} is known") from error
    except rounds.UnknownCriteriaSet as error:
        raise ProblemError.invalid("criteria_set", f"no criteria set {error}") from error
    except rounds.RoundExists as error:
        raise ProblemError(
            409,
            "Conflict",
            _(
                "Round {ref} already reviews {level} {unit_code} for {period} under"
                " {criteria_set}.",
                ref=error.existing.id,
                level=level_name(body.level),
                unit_code=body.unit_code,
                period=body.period,
                criteria_set=error.existing.criteria_set,
            ),
        ) from error
    response.headers["Location"] = f"/v1/evaluation-rounds/{opened.id}"
    return rounds.round_summary(opened)


@router.get("")
async def list_rounds(
    *,
    uow: UowDep,
    level: UnitLevelParam | None = None,
    unit_code: Annotated[Code | None, Query()] = None,
    period: Annotated[PeriodField | None, Query()] = None,
    state: RoundState | None = None,
    cursor: Annotated[str | None, Query(max_length=12, pattern=r"^[0-9]+$")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> dict[str, Any]:
    """Rounds, newest first, filtered by any of level, unit, period and state."""
    if period is not None:
        check_period(period)
    offset = int(cursor or 0)
    found = await adapters.list_rounds(
        uow.session,
        filters={
            "level": level,
            "unit_code": unit_code,
            "period": period,
            "state": state.value if state else None,
        },
        limit=limit + 1,
        offset=offset,
    )
    return {
        "items": [rounds.round_summary(r) for r in found[:limit]],
        "next_cursor": str(offset + limit) if len(found) > limit else None,
    }


@router.get(":schedule", responses=file_responses("xlsx"))
async def get_schedule(
    *,
    uow: UowDep,
    period: PeriodParam,
    level: UnitLevelParam = "province",
    criteria_set: Annotated[CriteriaVersion | None, Query()] = None,
    schedule_format: Annotated[Literal["json", "xlsx"], Query(alias="format")] = "json",
    language: RequestLanguage,
) -> Any:
    """Which units of `level` have approved their round for `period` on time, late, or not
    (yet): `on_time`, `late`, `overdue`, `pending`, `missing`, with the counts and the share
    approved on time; JSON, or XLSX in the reader's language."""
    check_period(period)
    chosen = criteria_set or (await adapters.active_criteria_set(uow.session)).version
    table = await rounds.schedule(
        uow.session,
        level=level,
        period=period,
        criteria_set=chosen,
        today=local_time(datetime.now(UTC)).date(),
    )
    if schedule_format == "json":
        return table
    lines = [
        [
            unit["unit_code"],
            unit["name"],
            SCHEDULE_STATUS_LABELS[unit["status"]].render(language),
            unit["state"],
            unit["due_on"].isoformat() if unit["due_on"] else None,
            local_time(unit["approved_at"]).strftime("%Y-%m-%d %H:%M")
            if unit["approved_at"]
            else None,
        ]
        for unit in table["items"]
    ]
    path = await render.table_xlsx(
        sheet_name=SCHEDULE_SHEET.render(language),
        title=f"{SCHEDULE_SHEET.render(language)}: {level} {period} ({chosen})",
        columns=SCHEDULE_COLUMNS,
        rows=lines,
        language=language,
    )
    return xlsx_response(
        path,
        headers=download_headers(
            f"cdt-schedule-{level}-{period}", extension="xlsx", language=language
        ),
    )


@router.get("/{round_id}", responses={404: {"description": "no such round"}})
async def get_round(round_id: RoundIdPath, uow: UowDep) -> dict[str, Any]:
    """The round, every move (who, when, why), its approvals, and once approved: the unit's
    frozen score, its live score now, and how many subjects changed since (`late_changes`)."""
    found = await adapters.get_round(uow.session, round_id)
    if found is None:
        raise _no_round(round_id)
    return await rounds.round_view(uow.session, found)


async def _move(
    uow: UowDep, round_id: UUID, action: RoundAction, body: MoveIn | None, access: Access
) -> Any:
    """Move a round of a unit within the caller's units (any other round is not found)."""
    found = await adapters.get_round(uow.session, round_id)
    if found is None:
        raise _no_round(round_id)
    path = await adapters.subject_unit_path(
        uow.session, subject_type=found.level, subject_id=found.unit_code
    )
    access.require_resource(path, what="evaluation round", ref=round_id)
    try:
        moved = await rounds.move_round(
            uow, round_id, action, reason=body.reason if body else None, actor=access.actor.subject
        )
    except rounds.RoundNotFound as error:
        raise _no_round(round_id) from error
    except TransitionRefused as error:
        raise ProblemError(409, "Conflict", error.message) from error
    return await rounds.round_view(uow.session, moved)


MOVE_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such round"},
    409: {"description": "the round's state does not allow it, or a reason is missing"},
}


@router.post("/{round_id}:submit", responses=MOVE_RESPONSES)
async def submit_round(
    round_id: RoundIdPath, uow: UowDep, access: AccessDep, body: MoveBody = None
) -> Any:
    """`open` or `reopened` → `under_review`."""
    return await _move(uow, round_id, RoundAction.SUBMIT, body, access)


@router.post("/{round_id}:approve", responses=MOVE_RESPONSES)
async def approve_round(
    round_id: RoundIdPath, uow: UowDep, access: AccessDep, body: MoveBody = None
) -> Any:
    """`under_review` → `approved`: every score under the unit is frozen in a snapshot."""
    return await _move(uow, round_id, RoundAction.APPROVE, body, access)


@router.post("/{round_id}:reopen", responses=MOVE_RESPONSES)
async def reopen_round(
    round_id: RoundIdPath, uow: UowDep, access: AccessDep, body: MoveBody = None
) -> Any:
    """`under_review` or `approved` → `reopened`, with a reason; earlier approvals stay."""
    return await _move(uow, round_id, RoundAction.REOPEN, body, access)


@router.get(
    "/{round_id}/report",
    responses={
        **file_responses("csv", "xlsx"),
        404: {"description": "no such round, or no such approval"},
    },
)
async def get_round_report(
    *,
    round_id: RoundIdPath,
    runtime: RuntimeDep,
    uow: UowDep,
    approval: Annotated[int | None, Query(ge=1, le=10_000)] = None,
    rows: RowsQuery = None,
    report_format: FormatQuery = "json",
    language: RequestLanguage,
) -> Response:
    """The round's report as its latest approval froze it (or `approval`: an earlier one);
    before any approval, the live scores under its unit."""
    found = await adapters.get_round(uow.session, round_id)
    if found is None:
        raise _no_round(round_id)
    chosen = approval if approval is not None else (found.approvals or None)
    if chosen is not None and chosen > found.approvals:
        raise ProblemError(
            404,
            "Not Found",
            _("Round {ref} has no approval {approval}.", ref=round_id, approval=chosen),
        )
    scope = ReportScope(
        level=found.level,
        unit_code=found.unit_code,
        period=found.period,
        criteria_set=found.criteria_set,
        round_id=found.id,
        approval=chosen,
    )
    summary = (
        await adapters.snapshot_summary(uow.session, round_id=found.id, approval=chosen)
        if chosen is not None
        else await adapters.unit_summary(uow.session, level=found.level, unit_code=found.unit_code)
    )
    appendix = None
    if chosen is not None and report_format == "xlsx":
        teams = await rounds.candidates(
            uow.session, found, level="team", rule=DEFAULT_RULE, approval=chosen
        )
        members = await rounds.member_candidates(
            uow.session, found, rule=DEFAULT_RULE, approval=chosen
        )
        appendix = render.Appendix(
            sheet=CANDIDATES_SHEET,
            columns=CANDIDATE_COLUMNS,
            rows=[
                *(
                    [LEVEL_LABELS[t["level"]].render(language)]
                    + [t[column.key] for column in CANDIDATE_COLUMNS[1:]]
                    for t in teams
                ),
                *([MEMBER_LABEL.render(language), *member_candidate_row(m)] for m in members),
            ],
        )
    return await report_response(
        runtime,
        scope=scope,
        levels=levels_under(found.level, rows),
        report_format=report_format,
        language=language,
        summary=summary,
        appendix=appendix,
        head={
            "level": found.level,
            "unit_code": found.unit_code,
            "period": found.period,
            "criteria_set": found.criteria_set,
            "round": {"id": str(found.id), "state": found.state.value, "approval": chosen},
        },
        filename=f"cdt-round-{found.level}-{found.unit_code}-{found.period}"
        + (f"-approval-{chosen}" if chosen else "-live"),
    )


DEFAULT_RULE = CommendationRule()


@router.get(
    "/{round_id}/candidates",
    responses={404: {"description": "no such round"}, 409: {"description": "not approved"}},
)
async def get_candidates(
    *,
    round_id: RoundIdPath,
    uow: UowDep,
    level: RowLevelParam = "team",
    top: Annotated[int, Query(ge=1, le=500)] = DEFAULT_RULE.top,
    min_score: Annotated[float, Query(ge=0, le=100)] = DEFAULT_RULE.min_score,
    min_activities: Annotated[int, Query(ge=0, le=1_000_000)] = DEFAULT_RULE.min_activities,
    exclude_flagged: bool = DEFAULT_RULE.exclude_flagged,
    approval: Annotated[int | None, Query(ge=1, le=10_000)] = None,
) -> dict[str, Any]:
    """Commendation candidates from the round's snapshot: the best `top` subjects of `level`
    under its unit with at least `min_score` points and `min_activities` activities, teams
    with an unresolved suspicious-activity alert left out (unless `exclude_flagged=false`)."""
    found = await _round_with_approval(uow, round_id, approval)
    rule = CommendationRule(
        top=top,
        min_score=min_score,
        min_activities=min_activities,
        exclude_flagged=exclude_flagged,
    )
    try:
        items = await rounds.candidates(
            uow.session, found, level=level, rule=rule, approval=approval
        )
    except rounds.NotApproved as error:
        raise _nothing_frozen(round_id) from error
    return {
        "round_id": found.id,
        "approval": approval or found.approvals,
        "level": level,
        "rule": asdict(rule),
        "items": items,
    }


@router.get(
    "/{round_id}/member-candidates",
    responses={404: {"description": "no such round"}, 409: {"description": "not approved"}},
)
async def get_member_candidates(
    *,
    round_id: RoundIdPath,
    uow: UowDep,
    top: Annotated[int, Query(ge=1, le=500)] = DEFAULT_RULE.top,
    min_activities: Annotated[int, Query(ge=0, le=1_000_000)] = DEFAULT_RULE.min_activities,
    exclude_flagged: bool = DEFAULT_RULE.exclude_flagged,
    approval: Annotated[int | None, Query(ge=1, le=10_000)] = None,
) -> dict[str, Any]:
    """Member commendation candidates, frozen when the round was approved: the `top` members
    under its unit by activities in its period (then households reached, then citizens
    reached), each with at least `min_activities`, members of a team with an unresolved
    suspicious-activity alert left out (unless `exclude_flagged=false`). Members are named by
    id and team; their names and phone numbers stay in the teams service."""
    found = await _round_with_approval(uow, round_id, approval)
    rule = CommendationRule(
        top=top, min_score=0.0, min_activities=min_activities, exclude_flagged=exclude_flagged
    )
    try:
        items = await rounds.member_candidates(uow.session, found, rule=rule, approval=approval)
    except rounds.NotApproved as error:
        raise _nothing_frozen(round_id) from error
    return {
        "round_id": found.id,
        "approval": approval or found.approvals,
        "rule": {"top": top, "min_activities": min_activities, "exclude_flagged": exclude_flagged},
        "items": items,
    }


async def _round_with_approval(
    uow: UnitOfWork, round_id: UUID, approval: int | None
) -> EvaluationRound:
    """The round, 404 when there is none or it has no such approval."""
    found = await adapters.get_round(uow.session, round_id)
    if found is None:
        raise _no_round(round_id)
    if approval is not None and approval > found.approvals:
        raise ProblemError(
            404,
            "Not Found",
            _("Round {ref} has no approval {approval}.", ref=round_id, approval=approval),
        )
    return found


def _nothing_frozen(round_id: UUID) -> ProblemError:
    return ProblemError(
        409,
        "Conflict",
        _("Round {ref} has not been approved: nothing is frozen yet.", ref=round_id),
    )


def _no_round(round_id: UUID) -> ProblemError:
    return ProblemError(404, "Not Found", _("No evaluation round {ref}.", ref=round_id))
