"""Administrative units (`/v1/admin-units`): import, create, read, coverage, re-organise."""

from __future__ import annotations

import asyncio
import json
from datetime import date
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.app import Authorized, RuntimeDep, UowDep
from common.contracts.teams import UnitPath
from common.i18n import _
from common.moments import IsoDate
from common.problems import ProblemError
from teams.adapters import UnitRepository
from teams.api_common import (
    BULK_CONTENT,
    CURSOR_RESPONSES,
    DEFAULT_PAGE,
    MAX_PAGE,
    READ_RESPONSES,
    NameQuery,
    ReaderDep,
    SortQuery,
    cursor_after,
    decode_cursor,
    encode_cursor,
    not_found,
    page_of,
    raise_domain,
    stream_bulk,
)
from teams.domain import AdminUnit, DomainError
from teams.legacy_source import SOURCE_NAME as LEGACY_SOURCE
from teams.legacy_source import load_legacy_units
from teams.legacy_source import package_version as legacy_version
from teams.rows import UNIT_COLUMNS, UnitRow
from teams.units_source import SOURCE_NAME, current_units, package_version
from teams.use_cases import (
    BatchOutcome,
    apply_units,
    import_legacy_units,
    merge_units,
    reparent_unit,
    split_unit,
)

router = APIRouter(prefix="/v1", tags=["admin units"])

UnitCode = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
]
MAX_IMPORT_JSON_BYTES = 4_096


class UnitOut(BaseModel):
    code: str
    name: str
    level: str
    parent_code: str | None
    path: UnitPath
    valid_from: date | None
    valid_to: date | None
    replaced_by: list[str]
    version: int


class UnitPage(BaseModel):
    items: list[UnitOut]
    next_cursor: str | None


class ImportSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The current units, or the 63-province ones with their crosswalk to the current ones.
    source: Literal["vietnam-provinces", "vietnamadminunits-legacy"]


class MergeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sources: Annotated[list[UnitCode], Field(min_length=1, max_length=50)]
    into: UnitCode
    effective_on: IsoDate


class SplitBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    into: Annotated[list[UnitCode], Field(min_length=1, max_length=50)]
    effective_on: IsoDate
    # Child unit code or team code -> one of `into`; the rest go to the first of `into`.
    assign: Annotated[dict[UnitCode, UnitCode], Field(max_length=10_000)] = {}


class ReparentBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    parent_code: UnitCode
    effective_on: IsoDate


async def _out(repo: UnitRepository, units: list[AdminUnit]) -> list[UnitOut]:
    paths = await repo.unit_paths(u.code for u in units)
    return [
        UnitOut(
            code=u.code,
            name=u.name,
            level=u.level,
            parent_code=u.parent_code,
            path=paths[u.code],
            valid_from=u.valid_from,
            valid_to=u.valid_to,
            replaced_by=list(u.replaced_by),
            version=u.version,
        )
        for u in units
    ]


@router.post(
    "/admin-units:import",
    dependencies=[Authorized],
    summary=(
        "Import units: a packaged dataset (JSON body: vietnam-provinces, or"
        " vietnamadminunits-legacy) or CSV / NDJSON / XLSX rows"
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": ImportSource.model_json_schema()},
                **BULK_CONTENT,
            },
        }
    },
)
async def import_units(request: Request, runtime: RuntimeDep) -> dict[str, Any]:
    media = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if media == "application/json":
        body = await _small_json(request)
        try:
            ImportSource.model_validate(body)
        except ValidationError as exc:
            raise ProblemError(
                422,
                "Validation failed",
                'Expected {"source": "vietnam-provinces"} or'
                ' {"source": "vietnamadminunits-legacy"}.',
                errors=[{"field": "source", "message": e["msg"]} for e in exc.errors()],
            ) from exc
        return await import_package(runtime, body["source"])
    return await stream_bulk(
        request, runtime, columns=UNIT_COLUMNS, schema=UnitRow, apply=apply_units
    )


async def import_package(runtime: Any, source: str = SOURCE_NAME) -> dict[str, Any]:
    """A packaged dataset in one transaction (parents precede children): the current units
    (3,355 rows) or the legacy ones with their crosswalk (10,794 rows)."""
    if source == LEGACY_SOURCE:
        return await _import_legacy(runtime)
    rows = [(i + 1, UnitRow.model_validate(u)) for i, u in enumerate(current_units())]
    async with runtime.unit_of_work() as uow:
        outcome = await apply_units(uow, rows, source=SOURCE_NAME)
        await uow.commit()
    return _import_report(SOURCE_NAME, package_version(), len(rows), outcome)


async def _import_legacy(runtime: Any) -> dict[str, Any]:
    current = current_units()
    # Reading the package's tables takes a second or two: not on the event loop.
    units = await asyncio.to_thread(load_legacy_units, current)
    new_parents = {u["code"]: u["parent_code"] for u in current if u["parent_code"]}
    async with runtime.unit_of_work() as uow:
        outcome = await import_legacy_units(uow, units, new_parents=new_parents)
        await uow.commit()
    return _import_report(LEGACY_SOURCE, legacy_version(), len(units), outcome)


def _import_report(source: str, version: str, rows: int, outcome: BatchOutcome) -> dict[str, Any]:
    return {
        "source": source,
        "version": version,
        "rows": rows,
        "created": outcome.created,
        "updated": outcome.updated,
        "unchanged": rows - outcome.created - outcome.updated - len(outcome.errors),
        "rejected": len(outcome.errors),
        "errors": [e.as_dict() for e in outcome.errors[:100]],
    }


async def _small_json(request: Request) -> Any:
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_IMPORT_JSON_BYTES:
            raise ProblemError(413, "Content Too Large", "The import request is too large.")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ProblemError(400, "Malformed JSON", "The request body is not valid JSON.") from exc


@router.post(
    "/admin-units",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Authorized],
    responses={409: {"description": "duplicate code"}, 422: {"description": "bad parent"}},
)
async def create_unit(body: UnitRow, uow: UowDep) -> UnitOut:
    repo = UnitRepository(uow.session)
    if await repo.get(body.code) is not None:
        raise ProblemError(
            409, "Duplicate code", _("A unit with code {code!r} exists.", code=body.code)
        )
    outcome = await apply_units(uow, [(1, body)], source="api")
    if outcome.errors:
        error = outcome.errors[0]
        raise ProblemError(
            422,
            "Validation failed",
            error.message,
            errors=[{"field": error.field, "message": error.message, "type": "domain"}],
        )
    await uow.commit()
    unit = await repo.get(body.code)
    assert unit is not None
    return (await _out(repo, [unit]))[0]


@router.get("/admin-units/{code}", responses=READ_RESPONSES)
async def get_unit(code: str, uow: UowDep, reader: ReaderDep) -> UnitOut:
    repo = UnitRepository(uow.session)
    unit = await repo.get(code)
    if unit is None or not reader.may_see(unit.path):
        raise not_found(_("No unit {ref}.", ref=code))
    return (await _out(repo, [unit]))[0]


@router.get("/admin-units", responses={401: READ_RESPONSES[401], **CURSOR_RESPONSES})
async def list_units(
    *,
    uow: UowDep,
    reader: ReaderDep,
    parent: Annotated[UnitCode | None, Query()] = None,
    level: Literal["province", "district", "commune", "village"] | None = None,
    q: NameQuery = None,
    sort: SortQuery = "id",
    cursor: Annotated[str | None, Query(max_length=400)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
) -> UnitPage:
    repo = UnitRepository(uow.session)
    units = await repo.page(
        parent=parent,
        level=level,
        name=q,
        page=page_of(cursor, sort=sort, key=str),
        limit=limit + 1,
        units=reader.units,
    )
    more = len(units) > limit
    units = units[:limit]
    last = units[-1] if more else None
    return UnitPage(
        items=await _out(repo, units),
        next_cursor=cursor_after(name=last.name, key=last.code, sort=sort) if last else None,
    )


@router.get("/admin-units/{code}/coverage", responses=READ_RESPONSES)
async def coverage(code: str, uow: UowDep, reader: ReaderDep) -> dict[str, Any]:
    """Teams, members, trained members, villages with / without a team: the unit and each
    direct child unit (current units only; active teams and members)."""
    repo = UnitRepository(uow.session)
    unit = await repo.get(code)
    if unit is None or not reader.may_see(unit.path):
        raise not_found(_("No unit {ref}.", ref=code))
    rows = await repo.coverage(unit.path)
    keys = ("teams", "members", "trained_members", "villages", "villages_with_team")

    def counts(row: Any) -> dict[str, int]:
        data = {k: int(row[k]) for k in keys}
        data["villages_without_team"] = data["villages"] - data["villages_with_team"]
        return data

    totals = dict.fromkeys((*keys, "villages_without_team"), 0)
    for row in rows:
        for key, value in counts(row).items():
            totals[key] += value
    names = await repo.get_many(r["child"] for r in rows if r["child"])
    children = [
        {"code": r["child"], "name": names[r["child"]].name, "level": names[r["child"]].level}
        | counts(r)
        for r in rows
        if r["child"] and r["child"] in names
    ]
    return {
        "code": unit.code,
        "name": unit.name,
        "level": unit.level,
        **totals,
        "children": children,
    }


@router.get("/admin-units:crosswalk", responses={401: READ_RESPONSES[401], **CURSOR_RESPONSES})
async def crosswalk(
    uow: UowDep,
    reader: ReaderDep,
    code: Annotated[UnitCode | None, Query()] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
) -> dict[str, Any]:
    """The old -> new history of merges, splits and moves (what scoring re-rolls by)."""
    after = decode_cursor(cursor)
    if after is not None and not after.isdigit():
        raise ProblemError(400, "Invalid cursor", "Pass back a next_cursor unchanged.")
    rows = await UnitRepository(uow.session).crosswalk(
        code=code, after=int(after) if after else None, limit=limit + 1, units=reader.units
    )
    more = len(rows) > limit
    rows = rows[:limit]
    items = [{k: v for k, v in row.items() if k != "id"} for row in rows]
    return {"items": items, "next_cursor": encode_cursor(str(rows[-1]["id"])) if more else None}


async def _reorganise(uow: Any, work: Any) -> dict[str, Any]:
    try:
        plan = await work
    except DomainError as exc:
        raise_domain(exc)
    await uow.commit()
    return cast(dict[str, Any], plan.summary())


@router.post("/admin-units:merge", dependencies=[Authorized])
async def merge(body: MergeBody, uow: UowDep) -> dict[str, Any]:
    return await _reorganise(
        uow,
        merge_units(uow, sources=body.sources, into=body.into, effective_on=body.effective_on),
    )


@router.post("/admin-units/{code}:split", dependencies=[Authorized])
async def split(code: str, body: SplitBody, uow: UowDep) -> dict[str, Any]:
    return await _reorganise(
        uow,
        split_unit(
            uow, code=code, into=body.into, effective_on=body.effective_on, assign=body.assign
        ),
    )


@router.post("/admin-units/{code}:reparent", dependencies=[Authorized])
async def reparent(code: str, body: ReparentBody, uow: UowDep) -> dict[str, Any]:
    return await _reorganise(
        uow,
        reparent_unit(uow, code=code, parent_code=body.parent_code, effective_on=body.effective_on),
    )
