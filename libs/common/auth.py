"""Bearer-token authentication: the operator token (partner keys live in activities)."""

from __future__ import annotations

import hmac

from fastapi import Request
from fastapi.security import HTTPBearer

from common.problems import ProblemError

UNAUTHORIZED_HEADERS = {"WWW-Authenticate": "Bearer"}


class BearerScheme(HTTPBearer):
    """A bearer scheme as the OpenAPI document declares it (the operations that depend on it
    list it under `security`); the dependency that checks the token reads it itself."""

    async def __call__(self, request: Request) -> None:  # type: ignore[override]
        return None


OPERATOR_SCHEME = BearerScheme(
    scheme_name="operator",
    description=(
        "The operator token (`CDT_ADMIN_TOKEN`), or a person's access token (an OIDC JWT from"
        " `CDT_OIDC_ISSUER`) whose roles permit the operation."
    ),
    auto_error=False,
)
PARTNER_SCHEME = BearerScheme(
    scheme_name="partner_key",
    description="A partner app's API key (from `POST /v1/partners`), rate-limited per key.",
    auto_error=False,
)


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def is_operator_token(token: str | None, *, expected: str | None) -> bool:
    if not token or not expected:
        return False
    return hmac.compare_digest(token.encode(), expected.encode())


def require_bearer(request: Request) -> str:
    token = bearer_token(request)
    if token is None:
        raise ProblemError(
            401, "Unauthorized", "A bearer token is required.", headers=UNAUTHORIZED_HEADERS
        )
    return token
