"""The local identity provider's HTTP API: accounts, invitations, tokens, keys, JWKS.

Served when no external OpenID Connect provider is configured (`CDT_OIDC_ISSUER` unset or
this service's `TEAMS_ISSUER_URL`). Passwords, invitation codes and tokens are never logged
nor echoed; a failed login says nothing about which part was wrong.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Request, status
from pydantic import BaseModel, ConfigDict, Field

from common.app import Authorized, RuntimeDep, UowDep
from common.i18n import _
from common.problems import ProblemError
from common.ratelimit import FailureLimiter
from common.roles import ROLES, RoleGrant
from common.runtime import ServiceRuntime
from common.text import NameText
from teams.adapters import account_by_id, disable_account
from teams.api_common import not_found, raise_domain, settings_of
from teams.domain import USERNAME_PATTERN, Account, DomainError
from teams.settings import signing_key_passphrase
from teams.use_cases import (
    IssuerConfig,
    authenticate,
    create_account,
    issue_token,
    published_keys,
    recently_disabled,
    redeem_invitation,
    rotate_signing_key,
)

router = APIRouter(tags=["identity"])

Username = Annotated[str, Field(pattern=USERNAME_PATTERN, description="lower case")]
UnitCode = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
]
# Any printable text: no control characters (a pattern, so nothing is trimmed or normalised).
Password = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")]
InvitationCode = Annotated[str, Field(max_length=100, pattern=r"^cdti_[A-Za-z0-9_-]{20,90}$")]
RoleName = Literal[
    "ministry_admin", "province_officer", "commune_officer", "team_leader", "auditor"
]
assert set(RoleName.__args__) == set(ROLES)  # type: ignore[attr-defined]


class RoleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: RoleName
    unit: UnitCode | None = Field(
        default=None, description="province or commune code; null for nationwide roles"
    )


class AccountCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: Username
    display_name: Annotated[NameText, Field(min_length=1, max_length=200)]
    roles: list[RoleIn] = Field(min_length=1, max_length=50)


class Redemption(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: InvitationCode
    password: Password


class Login(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: Annotated[str, Field(max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")]
    password: Password


class RoleOut(BaseModel):
    role: str
    unit: str | None


class AccountOut(BaseModel):
    id: UUID
    username: str
    display_name: str
    roles: list[RoleOut]
    disabled: bool
    has_password: bool


class AccountCreated(AccountOut):
    invitation_code: str = Field(description="shown once: the person redeems it to set a password")
    invitation_expires_at: datetime


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 (the scheme's name)
    expires_in: int


class KeyRotated(BaseModel):
    kid: str


def issuer_config(runtime: ServiceRuntime) -> IssuerConfig:
    settings = settings_of(runtime)
    return IssuerConfig(
        issuer=settings.issuer_url,
        audience=settings.cdt_oidc_audience,
        token_ttl_seconds=settings.token_ttl_seconds,
        leeway_seconds=settings.oidc_leeway_seconds,
        invitation_ttl=timedelta(hours=settings.invitation_ttl_hours),
        key_passphrase=signing_key_passphrase(settings),
    )


def _account_out(account: Account) -> dict[str, Any]:
    return {
        "id": account.id,
        "username": account.username,
        "display_name": account.display_name,
        "roles": [{"role": g.role, "unit": g.unit} for g in account.roles],
        "disabled": account.disabled,
        "has_password": account.has_password,
    }


@router.post(
    "/v1/accounts",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Authorized],
    summary="Create an account and its one-time invitation code (returned once)",
    responses={409: {"description": "username taken"}},
)
async def post_account(body: AccountCreate, uow: UowDep, runtime: RuntimeDep) -> AccountCreated:
    try:
        invitation = await create_account(
            uow,
            username=body.username,
            display_name=body.display_name,
            roles=[RoleGrant(r.role, r.unit) for r in body.roles],
            invitation_ttl=issuer_config(runtime).invitation_ttl,
        )
    except DomainError as exc:
        raise_domain(exc)
    return AccountCreated(
        **_account_out(invitation.account),
        invitation_code=invitation.code,
        invitation_expires_at=invitation.expires_at,
    )


@router.get(
    "/v1/accounts/{account_id}",
    dependencies=[Authorized],
    responses={404: {"description": "no such account"}},
)
async def get_account(account_id: UUID, uow: UowDep) -> AccountOut:
    row = await account_by_id(uow.session, account_id)
    if row is None:
        raise not_found(_("No account {ref}.", ref=account_id))
    return AccountOut(**_account_out(row.account))


@router.post(
    "/v1/accounts/{account_id}:disable",
    dependencies=[Authorized],
    summary="Disable an account: no more logins, its tokens refused everywhere within 30 s",
    responses={404: {"description": "no such account"}},
)
async def post_disable(account_id: UUID, uow: UowDep) -> AccountOut:
    if not await disable_account(uow.session, account_id):
        raise not_found(_("No account {ref}.", ref=account_id))
    await uow.commit()
    row = await account_by_id(uow.session, account_id)
    assert row is not None, "the account was just disabled"
    return AccountOut(**_account_out(row.account))


@router.post(
    "/v1/invitations:redeem",
    summary="Redeem an invitation code once, setting the account's password",
    responses={404: {"description": "no such usable code: unknown, expired or already used"}},
)
async def post_redeem(body: Redemption, uow: UowDep) -> AccountOut:
    try:
        account = await redeem_invitation(uow, code=body.code, password=body.password)
    except DomainError as exc:
        raise_domain(exc)
    if account is None:
        raise ProblemError(
            404, "Invalid invitation", "The invitation code is unknown, expired or already used."
        )
    return AccountOut(**{**_account_out(account), "has_password": True})


def _client_address(request: Request) -> str:
    # TLS ends at the load balancer, which must pass the client's address (uvicorn's
    # --forwarded-allow-ips); without it every client shares the proxy's address.
    return request.client.host if request.client else "unknown"


@router.post(
    "/v1/auth/token",
    summary="Username and password for a short-lived access token",
    responses={
        401: {"description": "wrong username or password, or a disabled account"},
        429: {"description": "too many failed logins for this account or address"},
    },
)
async def post_token(body: Login, request: Request, uow: UowDep, runtime: RuntimeDep) -> TokenOut:
    settings = settings_of(runtime)
    limiter: FailureLimiter = request.app.state.login_limiter
    now = time.monotonic()
    keys = (
        (f"account:{body.username.lower()}", settings.login_max_failures),
        (f"address:{_client_address(request)}", settings.login_max_failures_per_address),
    )
    wait = max(limiter.retry_after(key, limit=limit, now=now) for key, limit in keys)
    if wait:
        raise ProblemError(
            429,
            "Too Many Requests",
            "Too many failed logins for this account or address; try again later.",
            headers={"Retry-After": str(wait)},
        )
    # Counted as failed before the (slow) check, so parallel guesses cannot all slip past the
    # limit while the first ones are still being verified; withdrawn if it succeeds.
    for key, _limit in keys:
        limiter.failed(key, now=now)
    account = await authenticate(uow, username=body.username.lower(), password=body.password)
    if account is None:
        raise ProblemError(
            401,
            "Unauthorized",
            "The username or password is wrong, or the account is disabled.",
            type_="https://cdt.gov.vn/problems/invalid-credentials",
        )
    limiter.forget(keys[0][0])
    limiter.cancel(keys[1][0], at=now)
    config = issuer_config(runtime)
    token = await issue_token(uow, account, config=config)
    return TokenOut(access_token=token, expires_in=config.token_ttl_seconds)


@router.post(
    "/v1/auth/keys:rotate",
    dependencies=[Authorized],
    summary="A new signing key signs from now on; the old one stays published until its "
    "tokens expire",
)
async def post_rotate(uow: UowDep, runtime: RuntimeDep) -> KeyRotated:
    return KeyRotated(kid=await rotate_signing_key(uow, config=issuer_config(runtime)))


@router.get(
    "/v1/auth/disabled-subjects",
    summary="Subjects of recently disabled accounts (every service refuses their tokens)",
)
async def get_disabled(uow: UowDep, runtime: RuntimeDep) -> dict[str, list[str]]:
    return {"subjects": await recently_disabled(uow.session, config=issuer_config(runtime))}


@router.get("/.well-known/jwks.json", summary="The public keys access tokens are signed with")
async def get_jwks(uow: UowDep, runtime: RuntimeDep) -> dict[str, Any]:
    return await published_keys(uow.session, config=issuer_config(runtime))


@router.get("/.well-known/openid-configuration", summary="OpenID Connect discovery")
async def get_discovery(runtime: RuntimeDep) -> dict[str, Any]:
    issuer = issuer_config(runtime).issuer
    return {
        "issuer": issuer,
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "token_endpoint": f"{issuer}/v1/auth/token",
        "id_token_signing_alg_values_supported": ["ES256"],
        "token_endpoint_auth_methods_supported": ["none"],
        "grant_types_supported": ["password"],
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
        "claims_supported": ["sub", "name", "preferred_username", "roles"],
    }
