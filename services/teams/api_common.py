"""Helpers shared by the teams routers: cursors, problems, bulk bodies, who is asking."""

from __future__ import annotations

import base64
import binascii
from typing import Any, NoReturn

from fastapi import Request

from common.auth import bearer_token, is_operator_token
from common.problems import ProblemError
from common.runtime import ServiceRuntime
from teams.domain import DomainError
from teams.rows import BodyFormatError, media_kind
from teams.settings import TeamsSettings

MAX_PAGE = 500
DEFAULT_PAGE = 100
BULK_CONTENT: dict[str, Any] = {
    "text/csv": {"schema": {"type": "string"}},
    "application/x-ndjson": {"schema": {"type": "string"}},
}
BULK_REQUEST_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": BULK_CONTENT}}


def settings_of(runtime: ServiceRuntime) -> TeamsSettings:
    settings = runtime.settings
    return settings if isinstance(settings, TeamsSettings) else TeamsSettings()


def is_operator(request: Request, runtime: ServiceRuntime) -> bool:
    return is_operator_token(bearer_token(request), expected=runtime.settings.admin_token)


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


def raise_domain(exc: DomainError) -> NoReturn:
    status = 409 if exc.conflict else 422
    title = "Conflict" if exc.conflict else "Validation failed"
    errors: list[dict[str, Any]] = (
        [{"field": exc.field, "message": str(exc), "type": "domain"}] if exc.field else []
    )
    raise ProblemError(status, title, str(exc), errors=errors) from exc


def not_found(what: str, ref: object) -> ProblemError:
    return ProblemError(404, "Not Found", f"No {what} {ref}.")


def bulk_kind(request: Request) -> str:
    try:
        return media_kind(request.headers.get("content-type"))
    except BodyFormatError as exc:
        raise ProblemError(415, "Unsupported Media Type", str(exc)) from exc
