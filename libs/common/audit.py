"""The audit trail: who changed what, appended in the same transaction as the change.

`AuditMiddleware` opens an entry for every state-changing request (POST, PUT, PATCH, DELETE)
and answers it with its `X-Request-ID`; the authentication dependencies name the actor
(`identify`); the unit of work that commits the request's change appends the entry to the
service's `audit_log` in that very transaction (`UnitOfWork.commit`), once per request. A
request refused before anything changed (401, 403, 422...) commits nothing, so it leaves no
entry. What is recorded is who, the route, the path (ids and codes only) and the request and
trace ids: never a body, a query string, a token or a phone number.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, Table, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uuid_utils.compat import uuid7

from common import roles
from common.telemetry import current_trace_ids

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
REQUEST_ID_HEADER = "x-request-id"
# A caller's own request id is kept when it is short and plain; otherwise a new one is made.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
SUCCEEDED = "succeeded"


@dataclass(frozen=True)
class Actor:
    """Who acted: a person's subject, a partner, or the platform operator."""

    subject: str
    role: str
    unit: str | None = None


OPERATOR = Actor(subject="operator", role="operator")
ANONYMOUS = Actor(subject="anonymous", role="anonymous")


def actor_of(actor: roles.Actor) -> Actor:
    """How the trail names an authenticated actor: the operator, or a person's subject with
    their roles (comma-separated) and the unit of their first scoped role."""
    if actor.operator:
        return OPERATOR
    names = ",".join(dict.fromkeys(grant.role for grant in actor.roles)) or "none"
    unit = next((grant.unit for grant in actor.roles if grant.unit), None)
    return Actor(subject=actor.subject, role=names[:40], unit=unit)


@dataclass
class AuditedRequest:
    """The entry a state-changing request will append once its change commits."""

    method: str
    path: str
    request_id: str
    scope: Scope
    actor: Actor = ANONYMOUS
    recorded: bool = False

    @property
    def action(self) -> str:
        """The method and route template (`POST /v1/teams/{team_id}/members`): the route is
        known once the request was routed, which is before any change commits."""
        return f"{self.method} {route_template(self.scope)}"

    def row(self, *, outcome: str = SUCCEEDED) -> dict[str, Any]:
        """The `audit_log` row, in its column names (`at` is the transaction's time)."""
        trace = current_trace_ids()
        return {
            "actor_subject": self.actor.subject,
            "actor_role": self.actor.role,
            "actor_unit": self.actor.unit,
            "action": self.action,
            "resource": self.path,
            "outcome": outcome,
            "request_id": self.request_id,
            "trace_id": trace[0] if trace else None,
        }


def route_template(scope: Scope) -> str:
    """The path with each path parameter's value put back as `{name}`, segment by segment (a
    `:verb` suffix kept): the route as declared, whichever router prefixes it went through.
    `unmatched` when no route took the request."""
    if "route" not in scope:
        return "unmatched"
    names = {str(value): name for name, value in scope.get("path_params", {}).items()}
    segments = []
    for segment in str(scope["path"]).split("/"):
        head, colon, verb = segment.partition(":")
        segments.append("{" + names[head] + "}" + colon + verb if head in names else segment)
    return "/".join(segments)


_current: ContextVar[AuditedRequest | None] = ContextVar("cdt_audited_request", default=None)


def current() -> AuditedRequest | None:
    """The entry of the state-changing request being served, if any (None in consumers)."""
    return _current.get()


def pending() -> AuditedRequest | None:
    """The current entry while it is not recorded yet."""
    entry = _current.get()
    return entry if entry is not None and not entry.recorded else None


def identify(actor: Actor) -> None:
    """Name who is acting in the current request (its authentication did)."""
    entry = _current.get()
    if entry is not None:
        entry.actor = actor


class AuditMiddleware:
    """Opens the audit entry of each state-changing request and echoes its request id.

    Pure ASGI: the entry lives in a context variable that the endpoint, its dependencies and
    the unit of work see (a `BaseHTTPMiddleware` would run the app in another context)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in WRITE_METHODS:
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        token = _current.set(
            AuditedRequest(
                method=scope["method"], path=scope["path"], request_id=request_id, scope=scope
            )
        )
        header = (REQUEST_ID_HEADER.encode(), request_id.encode())

        async def send_with_request_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_request_id)
        finally:
            _current.reset(token)


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER.encode():
            given: str = value.decode("latin-1")
            if _REQUEST_ID.match(given):
                return given
            break
    return str(uuid7())


# What a request's entry holds (`AuditedRequest.row`); the table adds `seq` and `at`.
ENTRY_COLUMNS = (
    "actor_subject",
    "actor_role",
    "actor_unit",
    "action",
    "resource",
    "outcome",
    "request_id",
    "trace_id",
)
AUDIT_CSV_COLUMNS = ("seq", "at", *ENTRY_COLUMNS)


def csv_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


@dataclass(frozen=True)
class AuditFilter:
    """What `GET /v1/audit` narrows to; every field optional."""

    actor: str | None = None
    role: str | None = None
    unit: str | None = None  # the unit of the actor's grant: what a unit's people did
    resource: str | None = None  # a path prefix: "/v1/teams/" and everything under it
    since: datetime | None = None
    until: datetime | None = None


def audit_query(table: Table, where: AuditFilter, *, before: int | None = None) -> Select[Any]:
    """Newest first, from `before` (a `seq`, exclusive) down."""
    c = table.c
    query = select(*(c[name] for name in AUDIT_CSV_COLUMNS)).order_by(c.seq.desc())
    if where.actor is not None:
        query = query.where(c.actor_subject == where.actor)
    if where.role is not None:
        query = query.where(c.actor_role == where.role)
    if where.unit is not None:
        query = query.where(c.actor_unit == where.unit)
    if where.resource is not None:
        query = query.where(c.resource.startswith(where.resource, autoescape=True))
    if where.since is not None:
        query = query.where(c.at >= where.since)
    if where.until is not None:
        query = query.where(c.at < where.until)
    if before is not None:
        query = query.where(c.seq < before)
    return query


async def audit_page(
    session: AsyncSession, table: Table, where: AuditFilter, *, before: int | None, limit: int
) -> tuple[list[dict[str, Any]], int | None]:
    """A page of entries and the cursor of the next one (None: the last page)."""
    rows = (await session.execute(audit_query(table, where, before=before).limit(limit + 1))).all()
    items = [dict(row._mapping) for row in rows[:limit]]
    return items, (items[-1]["seq"] if len(rows) > limit else None)


async def audit_rows(
    session: AsyncSession, table: Table, where: AuditFilter, *, chunk: int = 5_000
) -> AsyncIterator[list[dict[str, Any]]]:
    """Every matching entry, newest first, in chunks (a server-side cursor: memory stays
    flat whatever the trail's length)."""
    stream = await session.stream(audit_query(table, where).execution_options(yield_per=chunk))
    async for partition in stream.partitions(chunk):
        yield [dict(row._mapping) for row in partition]
