"""`GET /v1/audit` and `GET /v1/audit:export` on every service: its audit trail, read-only.

No route updates or deletes an entry (the table refuses both). Readers: the platform operator,
ministry administrators and auditors (`common.roles.Action.READ_AUDIT`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from common.app import Authorized, RuntimeDep
from common.audit import AUDIT_CSV_COLUMNS, AuditFilter, audit_page, audit_rows, csv_value
from common.text import FreeText

MAX_PAGE = 500


class AuditEntry(BaseModel):
    seq: int
    at: datetime
    actor_subject: str
    actor_role: str
    actor_unit: str | None
    action: str
    resource: str
    outcome: str
    request_id: str
    trace_id: str | None


class AuditPage(BaseModel):
    items: list[AuditEntry]
    next_cursor: str | None


# Free text, so a character PostgreSQL cannot store is a 422 naming the parameter, before the
# export starts streaming (a failure mid-stream would cut the file short).
async def _filter(
    *,
    actor: Annotated[
        FreeText | None, Query(max_length=200, description="the actor's subject")
    ] = None,
    role: Annotated[FreeText | None, Query(max_length=40)] = None,
    unit: Annotated[
        FreeText | None, Query(max_length=64, description="the unit of the actor's role")
    ] = None,
    resource: Annotated[
        FreeText | None, Query(max_length=1000, description="a path prefix, e.g. `/v1/teams/`")
    ] = None,
    since: Annotated[datetime | None, Query(description="from this time, inclusive")] = None,
    until: Annotated[
        datetime | None, Query(description="before this time (an empty range finds nothing)")
    ] = None,
) -> AuditFilter:
    return AuditFilter(
        actor=actor, role=role, unit=unit, resource=resource, since=since, until=until
    )


FilterDep = Annotated[AuditFilter, Depends(_filter)]


def audit_router() -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["audit"], dependencies=[Authorized])

    @router.get(
        "/audit",
        summary="The audit trail, newest first: who changed what, when",
        response_model=AuditPage,
    )
    async def list_audit(
        runtime: RuntimeDep,
        where: FilterDep,
        cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,19}$")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    ) -> AuditPage:
        async with runtime.sessions() as session:
            items, after = await audit_page(
                session,
                runtime.tables.audit_log,
                where,
                before=int(cursor) if cursor else None,
                limit=limit,
            )
        return AuditPage(
            items=[AuditEntry.model_validate(item) for item in items],
            next_cursor=str(after) if after is not None else None,
        )

    @router.get(
        "/audit:export",
        summary="The audit trail as CSV (UTF-8 with BOM), newest first, streamed",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
    )
    async def export_audit(runtime: RuntimeDep, where: FilterDep) -> StreamingResponse:

        async def lines() -> AsyncIterator[str]:
            yield "\ufeff" + _csv_line(AUDIT_CSV_COLUMNS)
            async with runtime.sessions() as session:
                async for chunk in audit_rows(session, runtime.tables.audit_log, where):
                    yield "".join(
                        _csv_line([csv_value(row[name]) for name in AUDIT_CSV_COLUMNS])
                        for row in chunk
                    )

        return StreamingResponse(
            lines(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="audit.csv"'},
        )

    return router


def _csv_line(values: tuple[str, ...] | list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(values)
    return out.getvalue()
