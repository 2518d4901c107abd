"""Helpers shared by the teams routers: cursors, problems, bulk bodies, who is asking."""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal, NoReturn
from uuid import UUID

from fastapi import Depends, Query, Request

from common.app import RuntimeDep, UowDep, person_access
from common.auth import (
    OPERATOR_SCHEME,
    PARTNER_SCHEME,
    UNAUTHORIZED_HEADERS,
    bearer_token,
)
from common.i18n import Message, Text, _
from common.problems import ProblemError
from common.ratelimit import RateLimiter
from common.roles import Action, Scope, scope_of
from common.runtime import ServiceRuntime
from common.text import NameText
from teams.adapters import Page, partners_by_lookup
from teams.domain import DomainError, Reader, partner_key_lookup, partner_key_matches
from teams.rows import (
    XLSX_TYPE,
    BodyFormatError,
    BodyKind,
    ColumnSet,
    media_kind,
    raw_records,
    spreadsheet_records,
)
from teams.settings import TeamsSettings
from teams.use_cases import BatchApplier, M, run_bulk

MAX_PAGE = 500
DEFAULT_PAGE = 100
# `?q=`: a name to search for, case and diacritics aside ("hoa binh" finds "Hòa Bình").
NameQuery = Annotated[
    NameText | None,
    Query(
        min_length=2,
        max_length=100,
        description="part of the name, case and diacritics ignored (`hoa binh` finds Hòa Bình)",
    ),
]
# The same, where a search needs one.
NameSearch = Annotated[
    NameText,
    Query(
        min_length=2,
        max_length=100,
        description="part of the name, case and diacritics ignored (`hoa binh` finds Hòa Bình)",
    ),
]
BULK_CONTENT: dict[str, Any] = {
    "text/csv": {"schema": {"type": "string"}},
    "application/x-ndjson": {"schema": {"type": "string"}},
    XLSX_TYPE: {"schema": {"type": "string", "format": "binary"}},
}
BULK_REQUEST_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": BULK_CONTENT}}


def settings_of(runtime: ServiceRuntime) -> TeamsSettings:
    settings = runtime.settings
    return settings if isinstance(settings, TeamsSettings) else TeamsSettings()


async def get_reader(
    request: Request,
    runtime: RuntimeDep,
    uow: UowDep,
    _operator: Annotated[None, Depends(OPERATOR_SCHEME)],
    _partner: Annotated[None, Depends(PARTNER_SCHEME)],
) -> Reader:
    """The operator token, a person's access token (reading within their units), or an active
    partner key replicated from activities (reading within its provinces).

    Missing, malformed, unknown, wrong and revoked keys all get the same 401: probing teaches
    nothing. The key itself is never logged nor echoed.
    """
    access = await person_access(request, runtime)
    if access is not None:
        return Reader(
            access.scope, sees_phones=scope_of(access.actor, Action.MANAGE_MEMBERS) is not None
        )
    token = bearer_token(request)
    lookup = partner_key_lookup(token) if token is not None else None
    if token is not None and lookup is not None:
        for partner in await partners_by_lookup(uow.session, lookup):
            if not partner.revoked and partner_key_matches(token, key_sha256=partner.key_sha256):
                _rate_limit(request, partner.id, settings_of(runtime).partner_rate_limit)
                return Reader(Scope(frozenset(partner.provinces)))
    raise _unauthorized(_("The token or API key is not valid."))


def _rate_limit(request: Request, partner_id: UUID, rate: int) -> None:
    """Per-key token bucket, as in activities (per process: N processes allow N x rate)."""
    limiter: RateLimiter | None = getattr(request.app.state, "partner_limiter", None)
    if limiter is None:
        return
    wait = limiter.check(partner_id, rate=rate, now=time.monotonic())
    if wait:
        raise ProblemError(
            429,
            "Too Many Requests",
            _("Rate limit of {rate} requests/s exceeded.", rate=rate),
            headers={"Retry-After": str(wait)},
        )


def _unauthorized(detail: Text) -> ProblemError:
    return ProblemError(401, "Unauthorized", detail, headers=UNAUTHORIZED_HEADERS)


ReaderDep = Annotated[Reader, Depends(get_reader)]
READ_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or invalid operator token / partner key"},
    404: {"description": "unknown, or outside the caller's units (a partner key's provinces)"},
}
CURSOR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "a cursor this API did not issue (pass back a `next_cursor` unchanged)"}
}


def encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ProblemError(400, "Invalid cursor", "Pass back a next_cursor unchanged.") from exc


# `?sort=`: records in key order (the default), or by name in Vietnamese order.
SortQuery = Annotated[
    Literal["id", "name"],
    Query(description="`name`: by name in Vietnamese order (a ă â b c d đ e ê …)"),
]


def page_of(cursor: str | None, *, sort: str, key: Callable[[str], UUID | str]) -> Page:
    """The page a `next_cursor` (or none: the first) points at; a cursor of another sort or
    a forged one is a 400."""
    raw = decode_cursor(cursor)
    if raw is None:
        return Page(by_name=sort == "name")
    try:
        if sort == "name":
            name, last = json.loads(raw)
            return Page(by_name=True, after_name=str(name), after_key=key(str(last)))
        return Page(after_key=key(raw))
    except (ValueError, TypeError) as exc:
        raise ProblemError(400, "Invalid cursor", "Pass back a next_cursor unchanged.") from exc


def cursor_after(*, name: str, key: object, sort: str) -> str:
    """The `next_cursor` that resumes after the record with this name and key."""
    return encode_cursor(json.dumps([name, str(key)]) if sort == "name" else str(key))


def raise_domain(exc: DomainError) -> NoReturn:
    status = 409 if exc.conflict else 422
    title = "Conflict" if exc.conflict else "Validation failed"
    errors: list[dict[str, Any]] = (
        [{"field": exc.field, "message": str(exc), "type": "domain"}] if exc.field else []
    )
    raise ProblemError(status, title, exc.message, errors=errors) from exc


def not_found(detail: Message) -> ProblemError:
    return ProblemError(404, "Not Found", detail)


def bulk_kind(request: Request) -> BodyKind:
    try:
        return media_kind(request.headers.get("content-type"))
    except BodyFormatError as exc:
        raise ProblemError(415, "Unsupported Media Type", str(exc)) from exc


async def stream_bulk(
    request: Request,
    runtime: ServiceRuntime,
    *,
    columns: ColumnSet,
    schema: type[M],
    apply: BatchApplier[M],
) -> dict[str, Any]:
    """One streamed CSV / NDJSON / XLSX bulk upsert: parse as the body arrives (an XLSX body
    once it has arrived), apply in batches."""
    kind = bulk_kind(request)
    records = (
        spreadsheet_records(request.stream(), columns=columns)
        if kind == "xlsx"
        else raw_records(request.stream(), kind=kind, columns=columns)
    )
    try:
        report = await run_bulk(
            runtime,
            records,
            schema=schema,
            apply=apply,
            batch_size=settings_of(runtime).bulk_batch_size,
        )
    except BodyFormatError as exc:
        raise ProblemError(422, "Malformed body", str(exc)) from exc
    return report.as_dict()
