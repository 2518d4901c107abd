"""Teams HTTP API (`/v1`): teams, members, trainings, bulk imports."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Query, Request, status
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema
from sqlalchemy.exc import IntegrityError
from uuid_utils.compat import uuid7

from common.app import Access, AccessDep, Authorized, RuntimeDep, UowDep
from common.contracts.teams import UnitPath
from common.db import UnitOfWork
from common.envelope import OutboundEvent
from common.i18n import _
from common.moments import IsoDate
from common.problems import ProblemError
from common.text import NameText, blank_to_none
from teams.adapters import MemberRepository, TeamRepository, UnitRepository
from teams.api_common import (
    BULK_REQUEST_BODY,
    CURSOR_RESPONSES,
    DEFAULT_PAGE,
    MAX_PAGE,
    READ_RESPONSES,
    NameQuery,
    NameSearch,
    ReaderDep,
    SortQuery,
    cursor_after,
    decode_cursor,
    encode_cursor,
    not_found,
    page_of,
    raise_domain,
    settings_of,
    stream_bulk,
)
from teams.domain import (
    PATH_SEPARATOR,
    Affiliation,
    DomainError,
    Member,
    Reader,
    Role,
    SizeBounds,
    Team,
    check_team_unit,
    mask_phone,
    team_health,
)
from teams.rows import (
    MEMBER_COLUMNS,
    PHONE_PATTERN,
    TEAM_COLUMNS,
    MemberRow,
    TeamRow,
    normalise_phone,
)
from teams.use_cases import SOURCE, apply_members, apply_teams, publish_teams, today

router = APIRouter(prefix="/v1", tags=["teams"])

Code = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
Name = Annotated[NameText, Field(min_length=1, max_length=300)]
PersonName = Annotated[NameText, Field(min_length=1, max_length=200)]
OptionalName = Annotated[
    Annotated[NameText, Field(max_length=200)] | None, BeforeValidator(blank_to_none)
]
DecisionNo = Annotated[
    Annotated[NameText, Field(max_length=100)] | None, BeforeValidator(blank_to_none)
]
Phone = Annotated[
    Annotated[str, Field(pattern=PHONE_PATTERN)] | None, BeforeValidator(normalise_phone)
]


class TeamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: Code
    name: Name
    unit_code: Code
    established_on: IsoDate | None = None
    decision_no: DecisionNo = None


class TeamPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    unit_code: Code | None = None
    established_on: IsoDate | None = None
    decision_no: DecisionNo = None
    status: Literal["dissolved"] | None = None
    dissolved_on: IsoDate | None = None


class Dissolution(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dissolved_on: IsoDate


class Health(BaseModel):
    ok: bool
    size: int
    leaders: int
    trained: int
    issues: list[str]


class TeamOut(BaseModel):
    id: UUID
    code: str
    name: str
    unit_code: str
    unit_path: UnitPath | None = None
    status: str
    established_on: date | None
    dissolved_on: date | None = None
    decision_no: str | None
    version: int
    leader_member_id: UUID | None = None
    health: Health | None = None


class TeamPage(BaseModel):
    items: list[TeamOut]
    next_cursor: str | None


class MemberCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: Code | None = None
    full_name: PersonName
    role: Role = "member"
    affiliation: Affiliation = "other"
    enterprise_name: OptionalName = None
    phone: Phone = None
    joined_on: IsoDate
    left_on: IsoDate | None = None


class MemberPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Absent: unchanged; these cannot be cleared, so null is refused (and not documented).
    full_name: PersonName | SkipJsonSchema[None] = None
    role: Role | SkipJsonSchema[None] = None
    affiliation: Affiliation | SkipJsonSchema[None] = None
    enterprise_name: OptionalName = None
    phone: Phone = None
    joined_on: IsoDate | SkipJsonSchema[None] = None
    left_on: IsoDate | None = None
    removed: bool | SkipJsonSchema[None] = None


class MemberOut(BaseModel):
    id: UUID
    code: str | None
    team_id: UUID
    full_name: str
    role: str
    affiliation: str
    enterprise_name: str | None
    phone: str | None = Field(description="Masked unless the caller holds the operator token.")
    joined_on: date
    left_on: date | None
    trained: bool
    removed: bool
    version: int


class MemberPage(BaseModel):
    items: list[MemberOut]
    next_cursor: str | None


class TrainingCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    course: PersonName
    topic: OptionalName = None
    completed_on: IsoDate


class TrainingOut(BaseModel):
    id: UUID
    member_id: UUID
    course: str
    topic: str | None
    completed_on: date
    recorded: bool = Field(description="False when this training was already on record.")
    member: MemberOut


# --- teams ----------------------------------------------------------------------------------


async def _team_out(uow: UnitOfWork, teams: list[Team], bounds: SizeBounds) -> list[TeamOut]:
    repo = TeamRepository(uow.session)
    ids = [t.id for t in teams]
    paths = await UnitRepository(uow.session).unit_paths(t.unit_code for t in teams)
    counts = await repo.health_counts(ids)
    leaders = await repo.leaders(ids)
    result = []
    for team in teams:
        size, n_leaders, trained = counts.get(team.id, (0, 0, 0))
        health = team_health(size=size, leaders=n_leaders, trained=trained, bounds=bounds)
        result.append(
            TeamOut(
                id=team.id,
                code=team.code,
                name=team.name,
                unit_code=team.unit_code,
                unit_path=paths.get(team.unit_code),
                status=team.status,
                established_on=team.established_on,
                dissolved_on=team.dissolved_on,
                decision_no=team.decision_no,
                version=team.version,
                leader_member_id=leaders.get(team.id),
                health=Health(
                    ok=health.ok,
                    size=health.size,
                    leaders=health.leaders,
                    trained=health.trained,
                    issues=list(health.issues),
                ),
            )
        )
    return result


def _bounds(runtime: Any) -> SizeBounds:
    settings = settings_of(runtime)
    return SizeBounds(minimum=settings.team_min_size, maximum=settings.team_max_size)


async def _check_unit(uow: UnitOfWork, code: str, access: Access) -> None:
    """A unit a team may be placed in, within the caller's units (403 outside)."""
    unit = await UnitRepository(uow.session).get(code)
    if unit is not None:
        access.require_unit(unit.path.split(PATH_SEPARATOR), code=code)
    try:
        check_team_unit(unit, code=code, today=today())
    except DomainError as exc:
        raise_domain(exc)


async def _manage_team(uow: UnitOfWork, ref: str, access: Access) -> Team:
    """A team to change, locked; outside the caller's units it is "not found"."""
    team = await _load_team(uow, ref, lock=True)
    path = await UnitRepository(uow.session).unit_path_codes(team.unit_code)
    access.require_resource(path, what="team", ref=ref)
    return team


async def _manage_member(uow: UnitOfWork, ref: str, access: Access) -> Member:
    """A member to change, locked; outside the caller's units (by their team's unit) it is
    "not found"."""
    member = await _load_member(uow, ref, lock=True)
    team = await _load_team(uow, str(member.team_id))
    path = await UnitRepository(uow.session).unit_path_codes(team.unit_code)
    access.require_resource(path, what="member", ref=ref)
    return member


async def _load_team(uow: UnitOfWork, ref: str, *, lock: bool = False) -> Team:
    repo = TeamRepository(uow.session)
    team_id = _as_uuid(ref)
    team = (
        await repo.get(team_id, lock=lock)
        if team_id is not None
        else await repo.get_by_code(ref, lock=lock)
    )
    if team is None:
        raise not_found(_("No team {ref}.", ref=ref))
    return team


async def _read_team(uow: UnitOfWork, ref: str, reader: Reader) -> Team:
    """A team the reader may see; one outside a partner's provinces is "not found" (its
    existence is not revealed)."""
    team = await _load_team(uow, ref)
    if not reader.scope.nationwide:
        unit = await UnitRepository(uow.session).get(team.unit_code)
        if unit is None or not reader.may_see(unit.path):
            raise not_found(_("No team {ref}.", ref=ref))
    return team


def _as_uuid(ref: str) -> UUID | None:
    try:
        return UUID(ref)
    except ValueError:
        return None


async def _save_team(uow: UnitOfWork, team: Team) -> None:
    await TeamRepository(uow.session).save(team)
    await publish_teams(uow, [team])
    await uow.commit()


@router.post(
    "/teams",
    status_code=status.HTTP_201_CREATED,
    responses={
        403: {"description": "the unit is outside the caller's units"},
        409: {"description": "duplicate code"},
        422: {"description": "unknown unit"},
    },
)
async def create_team(
    body: TeamCreate, uow: UowDep, runtime: RuntimeDep, access: AccessDep
) -> TeamOut:
    await _check_unit(uow, body.unit_code, access)
    repo = TeamRepository(uow.session)
    if await repo.code_exists(body.code):
        raise ProblemError(
            409, "Duplicate code", _("A team with code {code!r} exists.", code=body.code)
        )
    team = Team.establish(
        code=body.code,
        name=body.name,
        unit_code=body.unit_code,
        established_on=body.established_on,
        decision_no=body.decision_no,
    )
    await repo.add(team)
    await publish_teams(uow, [team])
    try:
        await uow.commit()
    except IntegrityError as exc:  # a concurrent create with the same code won the race
        raise ProblemError(
            409, "Duplicate code", _("A team with code {code!r} exists.", code=body.code)
        ) from exc
    return (await _team_out(uow, [team], _bounds(runtime)))[0]


@router.get("/teams/{team_ref}", responses=READ_RESPONSES)
async def get_team(team_ref: str, uow: UowDep, runtime: RuntimeDep, reader: ReaderDep) -> TeamOut:
    """By id (UUID) or by registry code; the health flags are computed on read."""
    team = await _read_team(uow, team_ref, reader)
    return (await _team_out(uow, [team], _bounds(runtime)))[0]


@router.get("/teams", responses={**READ_RESPONSES, **CURSOR_RESPONSES})
async def list_teams(
    *,
    uow: UowDep,
    runtime: RuntimeDep,
    reader: ReaderDep,
    unit: Annotated[Code | None, Query(description="any unit: its subtree")] = None,
    status_: Annotated[Literal["active", "dissolved"] | None, Query(alias="status")] = None,
    q: NameQuery = None,
    sort: SortQuery = "id",
    cursor: Annotated[str | None, Query(max_length=400)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
) -> TeamPage:
    page = page_of(cursor, sort=sort, key=UUID)
    repo = TeamRepository(uow.session)
    if unit is None:
        teams = await repo.page(
            status=status_, page=page, limit=limit + 1, units=reader.units, name=q
        )
    else:
        found = await UnitRepository(uow.session).get(unit)
        if found is None or not reader.may_see(found.path):
            raise not_found(_("No unit {ref}.", ref=unit))
        teams = await repo.in_subtree(
            path=found.path, status=status_, page=page, limit=limit + 1,
            units=reader.units, name=q,
        )  # fmt: skip
    more = len(teams) > limit
    teams = teams[:limit]
    last = teams[-1] if more else None
    return TeamPage(
        items=await _team_out(uow, teams, _bounds(runtime)),
        next_cursor=cursor_after(name=last.name, key=last.id, sort=sort) if last else None,
    )


@router.patch(
    "/teams/{team_ref}",
    responses={
        403: {"description": "the new unit is outside the caller's units"},
        404: {"description": "unknown team, or outside the caller's units"},
        409: {"description": "dissolved"},
    },
)
async def patch_team(
    team_ref: str, body: TeamPatch, uow: UowDep, runtime: RuntimeDep, access: AccessDep
) -> TeamOut:
    team = await _manage_team(uow, team_ref, access)
    changes = body.model_dump(exclude_unset=True, exclude={"status", "dissolved_on"})
    if changes.get("name") is None:
        changes.pop("name", None)
    if "unit_code" in changes:
        if changes["unit_code"] is None:
            changes.pop("unit_code")
        else:
            await _check_unit(uow, changes["unit_code"], access)
    try:
        updated = team.revised(**changes)
        if body.status == "dissolved":
            updated = updated.dissolve(on=body.dissolved_on or today())
        elif body.dissolved_on is not None:
            raise DomainError(_("dissolved_on goes with status=dissolved."), field="dissolved_on")
    except DomainError as exc:
        raise_domain(exc)
    if updated is not team:
        await _save_team(uow, updated)
    return (await _team_out(uow, [updated], _bounds(runtime)))[0]


@router.post(
    "/teams/{team_ref}:dissolve",
    responses={
        404: {"description": "unknown team, or outside the caller's units"},
        409: {"description": "already dissolved"},
    },
)
async def dissolve_team(
    team_ref: str, body: Dissolution, uow: UowDep, runtime: RuntimeDep, access: AccessDep
) -> TeamOut:
    team = await _manage_team(uow, team_ref, access)
    try:
        dissolved = team.dissolve(on=body.dissolved_on)
    except DomainError as exc:
        raise_domain(exc)
    await _save_team(uow, dissolved)
    return (await _team_out(uow, [dissolved], _bounds(runtime)))[0]


# --- members --------------------------------------------------------------------------------


def _member_out(member: Member, *, operator: bool) -> MemberOut:
    return MemberOut(
        id=member.id,
        code=member.code,
        team_id=member.team_id,
        full_name=member.full_name,
        role=member.role,
        affiliation=member.affiliation,
        enterprise_name=member.enterprise_name,
        phone=member.phone if operator else mask_phone(member.phone),
        joined_on=member.joined_on,
        left_on=member.left_on,
        trained=member.trained,
        removed=member.removed,
        version=member.version,
    )


async def _load_member(uow: UnitOfWork, ref: str, *, lock: bool = False) -> Member:
    repo = MemberRepository(uow.session)
    member_id = _as_uuid(ref)
    member = (
        await repo.get(member_id, lock=lock)
        if member_id is not None
        else await repo.get_by_code(ref, lock=lock)
    )
    if member is None:
        raise not_found(_("No member {ref}.", ref=ref))
    return member


def _publish_member(uow: UnitOfWork, member: Member) -> None:
    uow.publish(OutboundEvent.of(member.changed_event(), source=SOURCE, subject=str(member.id)))


@router.post(
    "/teams/{team_ref}/members",
    status_code=status.HTTP_201_CREATED,
    responses={
        404: {"description": "unknown team, or outside the caller's units"},
        409: {"description": "dissolved team or duplicate code"},
    },
)
async def add_member(
    team_ref: str, body: MemberCreate, uow: UowDep, access: AccessDep
) -> MemberOut:
    team = await _manage_team(uow, team_ref, access)
    repo = MemberRepository(uow.session)
    if body.code is not None and await repo.code_exists(body.code):
        raise ProblemError(
            409, "Duplicate code", _("A member with code {code!r} exists.", code=body.code)
        )
    try:
        member = Member.join(team=team, **body.model_dump())
    except DomainError as exc:
        raise_domain(exc)
    await repo.add(member)
    _publish_member(uow, member)
    try:
        await uow.commit()
    except IntegrityError as exc:
        raise ProblemError(409, "Duplicate code", "A member with this code exists.") from exc
    return _member_out(member, operator=True)


@router.get("/teams/{team_ref}/members", responses={**READ_RESPONSES, **CURSOR_RESPONSES})
async def list_members(
    team_ref: str,
    *,
    uow: UowDep,
    reader: ReaderDep,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
) -> MemberPage:
    team = await _read_team(uow, team_ref, reader)
    after_raw = decode_cursor(cursor)
    after = _as_uuid(after_raw) if after_raw else None
    members = await MemberRepository(uow.session).of_team(team.id, after=after, limit=limit + 1)
    more = len(members) > limit
    members = members[:limit]
    return MemberPage(
        items=[_member_out(m, operator=reader.sees_phones) for m in members],
        next_cursor=encode_cursor(str(members[-1].id)) if more else None,
    )


@router.get("/members", responses={**READ_RESPONSES, **CURSOR_RESPONSES})
async def search_members(
    *,
    uow: UowDep,
    reader: ReaderDep,
    q: NameSearch,
    unit: Annotated[Code | None, Query(description="any unit: its subtree")] = None,
    sort: SortQuery = "id",
    cursor: Annotated[str | None, Query(max_length=400)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
) -> MemberPage:
    """Members whose name contains `q` (case and diacritics aside), across the country or
    under `unit`; a partner key sees its provinces' members only."""
    page = page_of(cursor, sort=sort, key=UUID)
    under = None
    if unit is not None:
        found = await UnitRepository(uow.session).get(unit)
        if found is None or not reader.may_see(found.path):
            raise not_found(_("No unit {ref}.", ref=unit))
        under = found.path
    members = await MemberRepository(uow.session).search(
        name=q, under=under, page=page, limit=limit + 1, units=reader.units
    )
    more = len(members) > limit
    members = members[:limit]
    last = members[-1] if more else None
    return MemberPage(
        items=[_member_out(m, operator=reader.sees_phones) for m in members],
        next_cursor=cursor_after(name=last.full_name, key=last.id, sort=sort) if last else None,
    )


@router.get("/members/{member_ref}", responses=READ_RESPONSES)
async def get_member(member_ref: str, uow: UowDep, reader: ReaderDep) -> MemberOut:
    member = await _load_member(uow, member_ref)
    if not reader.scope.nationwide:
        try:
            await _read_team(uow, str(member.team_id), reader)
        except ProblemError:
            raise not_found(_("No member {ref}.", ref=member_ref)) from None
    return _member_out(member, operator=reader.sees_phones)


@router.patch(
    "/members/{member_ref}",
    responses={404: {"description": "unknown member, or outside the caller's units"}},
)
async def patch_member(
    member_ref: str, body: MemberPatch, uow: UowDep, access: AccessDep
) -> MemberOut:
    member = await _manage_member(uow, member_ref, access)
    changes = body.model_dump(exclude_unset=True)
    for required in ("full_name", "role", "affiliation", "joined_on", "removed"):
        if required in changes and changes[required] is None:
            raise ProblemError(
                422,
                "Validation failed",
                _("{field} cannot be null.", field=required),
                errors=[{"field": required, "message": "cannot be null", "type": "domain"}],
            )
    try:
        updated = member.revised(**changes)
    except DomainError as exc:
        raise_domain(exc)
    if updated is not member:
        await MemberRepository(uow.session).save(updated)
        _publish_member(uow, updated)
        await uow.commit()
    return _member_out(updated, operator=True)


@router.post(
    "/members/{member_ref}/trainings",
    status_code=status.HTTP_201_CREATED,
    responses={
        404: {"description": "unknown member, or outside the caller's units"},
        409: {"description": "removed member"},
    },
)
async def add_training(
    member_ref: str, body: TrainingCreate, uow: UowDep, access: AccessDep
) -> TrainingOut:
    member = await _manage_member(uow, member_ref, access)
    if member.removed:
        raise ProblemError(409, "Conflict", "The member was removed from the registry.")
    if body.completed_on > today():
        raise ProblemError(
            422,
            "Validation failed",
            "completed_on is in the future.",
            errors=[{"field": "completed_on", "message": "in the future", "type": "domain"}],
        )
    repo = MemberRepository(uow.session)
    training_id = uuid7()
    recorded = await repo.add_training(
        training_id=training_id,
        member_id=member.id,
        course=body.course,
        topic=body.topic,
        completed_on=body.completed_on,
    )
    trained = member.trained_now()
    if trained is not member:
        await repo.save(trained)
        _publish_member(uow, trained)
    await uow.commit()
    return TrainingOut(
        id=training_id,
        member_id=member.id,
        course=body.course,
        topic=body.topic,
        completed_on=body.completed_on,
        recorded=recorded,
        member=_member_out(trained, operator=True),
    )


# --- bulk -----------------------------------------------------------------------------------


@router.post(
    "/teams:bulk",
    dependencies=[Authorized],
    openapi_extra=BULK_REQUEST_BODY,
    summary="Upsert teams by code from a streamed CSV / NDJSON body; per-row error report",
)
async def bulk_teams(request: Request, runtime: RuntimeDep) -> dict[str, Any]:
    return await stream_bulk(
        request, runtime, columns=TEAM_COLUMNS, schema=TeamRow, apply=apply_teams
    )


@router.post(
    "/members:bulk",
    dependencies=[Authorized],
    openapi_extra=BULK_REQUEST_BODY,
    summary="Upsert members by their code from a streamed CSV / NDJSON body",
)
async def bulk_members(request: Request, runtime: RuntimeDep) -> dict[str, Any]:
    return await stream_bulk(
        request, runtime, columns=MEMBER_COLUMNS, schema=MemberRow, apply=apply_members
    )
