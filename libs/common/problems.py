"""RFC 9457 problem details for every error a client can see.

A problem's `title` and `detail` are message ids (`common.i18n`), rendered when the response is
written in the language the request's `Accept-Language` chose (Vietnamese by default). Its
`type` is built from the English title, so it is the same URI in every language.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection

from common.consumer import TRANSIENT_ERRORS, is_transient
from common.i18n import DEFAULT_LANGUAGE, N_, Language, Text, _, negotiate, render

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://cdt.gov.vn/problems/"
# The JSON Schema of every error body, as the OpenAPI documents declare it.
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details; extension members may follow.",
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string", "title": "Type"},
        "title": {"type": "string", "title": "Title"},
        "status": {"type": "integer", "title": "Status"},
        "detail": {"type": "string", "title": "Detail"},
        "instance": {"type": "string", "title": "Instance"},
        "errors": {
            "type": "array",
            "title": "Errors",
            "description": "validation errors: the offending fields, without their values",
            "items": {
                "type": "object",
                "required": ["field", "message", "type"],
                "properties": {
                    "field": {"type": "string"},
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
    "additionalProperties": True,
}


class ProblemError(Exception):
    """Raise from anywhere in a request to answer with a problem document."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: Text | None = None,
        *,
        type_: str | None = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(str(detail or title))
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type_ or _slug(title)
        self.headers = headers
        self.extensions = extensions

    @classmethod
    def invalid(
        cls, field: str, message: str, *, type_: str = "value_error", detail: Text | None = None
    ) -> ProblemError:
        """A 422 naming the one field that is wrong, shaped as request validation's."""
        return cls(
            422,
            N_("Validation failed"),
            detail or _("Invalid fields: {fields}", fields=field),
            errors=[{"field": field, "message": message, "type": type_}],
        )


def _slug(title: str) -> str:
    return PROBLEM_TYPE_BASE + "-".join(title.lower().split())


def problem_response(
    *,
    status: int,
    title: str,
    detail: Text | None = None,
    type_: str | None = None,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    language: Language = DEFAULT_LANGUAGE,
    **extensions: Any,
) -> JSONResponse:
    """The problem document, its title and detail in `language` (its type from the English
    title, whatever the language)."""
    body: dict[str, Any] = {
        "type": type_ or _slug(title),
        "title": render(title, language),
        "status": status,
    }
    if detail:
        body["detail"] = render(detail, language)
    if instance:
        body["instance"] = instance
    body.update(extensions)
    headers = {**(headers or {}), "Content-Language": language.value}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def language_of(connection: HTTPConnection) -> Language:
    """The language a request's answers are written in, from its `Accept-Language`."""
    return negotiate(connection.headers.get("accept-language"))


async def request_language(
    accept_language: Annotated[
        str | None,
        Header(max_length=200, description="vi (the default) or en: the language of texts"),
    ] = None,
) -> Language:
    return negotiate(accept_language)


# A route's parameter for the language of the texts it answers with (documented as a header).
RequestLanguage = Annotated[Language, Depends(request_language)]


def _field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc)


def validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Never echo the rejected input back: it may carry phone numbers or household references.
    return [
        {"field": _field_name(err["loc"]), "message": err["msg"], "type": err["type"]}
        for err in exc.errors()
    ]


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(
            status=exc.status,
            title=exc.title,
            detail=exc.detail,
            type_=exc.type,
            instance=request.url.path,
            headers=exc.headers,
            language=language_of(request),
            **exc.extensions,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = {
            401: N_("Unauthorized"),
            403: N_("Forbidden"),
            404: N_("Not Found"),
            405: N_("Method Not Allowed"),
            413: N_("Content Too Large"),
        }.get(exc.status_code, N_("Error"))
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail != title else None
        return problem_response(
            status=exc.status_code,
            title=title,
            detail=detail,
            instance=request.url.path,
            headers=getattr(exc, "headers", None),
            language=language_of(request),
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = validation_errors(exc)
        if any(e["type"] == "json_invalid" for e in errors):
            return problem_response(
                status=400,
                title="Malformed JSON",
                detail="The request body is not valid JSON.",
                instance=request.url.path,
                language=language_of(request),
            )
        fields = ", ".join(sorted({e["field"] for e in errors}))
        return problem_response(
            status=422,
            title="Validation failed",
            detail=_("Invalid fields: {fields}", fields=fields),
            instance=request.url.path,
            language=language_of(request),
            errors=errors,
        )

    async def _dependency(request: Request, exc: Exception) -> JSONResponse:
        if not is_transient(exc):
            return await _unexpected(request, exc)
        log.warning("dependency unavailable on %s: %s", request.url.path, type(exc).__name__)
        return problem_response(
            status=503,
            title="Service Unavailable",
            detail="A backing service is unavailable; retry later.",
            instance=request.url.path,
            headers={"Retry-After": "2"},
            language=language_of(request),
        )

    # Registered per class (not as the catch-all) so Starlette answers without re-raising.
    for error in (*TRANSIENT_ERRORS, sa_exc.DBAPIError):
        app.add_exception_handler(error, _dependency)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(
            status=500,
            title="Internal Server Error",
            instance=request.url.path,
            language=language_of(request),
        )
