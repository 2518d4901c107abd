"""Who is acting: OpenID Connect / JWT bearer tokens verified locally, and the operator.

Every service verifies access tokens itself, without calling the issuer per request:

- the signature against the issuer's JWKS (asymmetric algorithms only: `none` and the HMAC
  family are refused whatever the token's header says, so a public key can never be used as an
  HMAC secret), fetched from `CDT_OIDC_JWKS_URL` or the issuer's discovery document, cached for
  `CDT_OIDC_JWKS_TTL_SECONDS` and fetched again, at most every
  `CDT_OIDC_JWKS_MIN_REFRESH_SECONDS`, when a token names a key id the cache does not hold (key
  rotation);
- `iss`, `aud`, `exp`, `nbf` (and `iat` when present) with `CDT_OIDC_LEEWAY_SECONDS` of clock
  skew;
- the subject against the issuer's list of disabled subjects (`CDT_OIDC_DISABLED_URL`),
  refreshed when older than `CDT_OIDC_DISABLED_REFRESH_SECONDS` (30 s): a disabled account's
  tokens stop working everywhere within that window. When the list cannot be refreshed for
  twice that long, tokens are refused with 503 (fail closed; the operator token still works).

Tokens are never logged: failures are reported by kind only.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
import jwt
from jwt.exceptions import InvalidTokenError, PyJWKError

from common.i18n import Text, _
from common.problems import ProblemError
from common.roles import ROLES, Actor, RoleGrant
from common.settings import ServiceSettings

log = logging.getLogger(__name__)

# Asymmetric only. HS* would let anyone holding the (public) JWKS forge tokens; `none` is no
# signature at all.
ALGORITHMS: Final = ("ES256", "ES384", "RS256", "RS384", "PS256", "EdDSA")

INVALID_TOKEN_HEADERS: Final = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


def looks_like_jwt(token: str) -> bool:
    """Three base64url segments whose first is a JSON object with an `alg`: a JWS, not an API
    key or the operator token (those keep their own answers)."""
    parts = token.split(".")
    if len(parts) != 3:
        return False
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except (ValueError, binascii.Error):
        return False
    return isinstance(header, dict) and "alg" in header


def invalid_token(detail: Text | None = None) -> ProblemError:
    return ProblemError(
        401,
        "Unauthorized",
        detail or _("The access token is not valid."),
        headers=INVALID_TOKEN_HEADERS,
    )


def actor_from_claims(claims: Mapping[str, Any]) -> Actor:
    grants: list[RoleGrant] = []
    raw_roles = claims.get("roles", [])
    if not isinstance(raw_roles, list):
        raise invalid_token()
    for item in raw_roles:
        if isinstance(item, str):  # plain role names, as many identity providers emit them
            grants.append(RoleGrant(item))
        elif isinstance(item, dict) and isinstance(item.get("role"), str):
            unit = item.get("unit")
            grants.append(RoleGrant(item["role"], unit if isinstance(unit, str) else None))
        else:
            raise invalid_token()
    name = claims.get("name") or claims.get("preferred_username")
    return Actor(
        subject=str(claims["sub"]),
        name=name if isinstance(name, str) else None,
        roles=tuple(g for g in grants if g.role in ROLES),
    )


JsonFetch = Callable[[], Awaitable[Mapping[str, Any]]]
SubjectsFetch = Callable[[], Awaitable[frozenset[str]]]


@dataclass
class _Cached:
    keys: dict[str, jwt.PyJWK] = field(default_factory=dict)
    fetched_at: float = float("-inf")


class KeySet:
    """The issuer's signing keys by `kid`: cached for `ttl`, refetched on an unknown `kid` at most
    every `min_refresh` seconds (a flood of made-up kids cannot hammer the issuer)."""

    def __init__(self, fetch: JsonFetch, *, ttl: float = 300.0, min_refresh: float = 10.0) -> None:
        self._fetch = fetch
        self._ttl = ttl
        self._min_refresh = min_refresh
        self._cached = _Cached()
        self._attempted_at = float("-inf")
        self._lock = asyncio.Lock()

    async def key(self, kid: str, *, now: float | None = None) -> jwt.PyJWK | None:
        now = time.monotonic() if now is None else now
        cached = self._cached
        if now - cached.fetched_at < self._ttl and kid in cached.keys:
            return cached.keys[kid]
        async with self._lock:
            cached = self._cached
            stale = now - cached.fetched_at >= self._ttl
            if (stale or kid not in cached.keys) and now - self._attempted_at >= self._min_refresh:
                self._attempted_at = now
                await self._refresh(now)
            return self._cached.keys.get(kid)

    async def _refresh(self, now: float) -> None:
        try:
            document = await self._fetch()
        except Exception as exc:  # keep the keys we have; the issuer may be restarting
            log.warning("could not fetch the issuer's JWKS: %s", type(exc).__name__)
            return
        keys: dict[str, jwt.PyJWK] = {}
        for entry in document.get("keys", []):
            if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
                continue
            if entry.get("use", "sig") != "sig":
                continue
            try:
                key = jwt.PyJWK(entry)
            except PyJWKError:
                continue  # a key type this process cannot use: skip it, keep the rest
            if key.algorithm_name in ALGORITHMS:
                keys[entry["kid"]] = key
        self._cached = _Cached(keys=keys, fetched_at=now)


class DisabledSubjects:
    """The issuer's disabled subjects, refreshed when older than `refresh` seconds."""

    def __init__(self, fetch: SubjectsFetch, *, refresh: float = 30.0) -> None:
        self._fetch = fetch
        self._refresh = refresh
        self._subjects: frozenset[str] = frozenset()
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def contains(self, subject: str, *, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if now - self._fetched_at >= self._refresh:
            async with self._lock:
                if now - self._fetched_at >= self._refresh:
                    try:
                        self._subjects = await self._fetch()
                        self._fetched_at = now
                    except Exception as exc:
                        log.warning("could not fetch disabled subjects: %s", type(exc).__name__)
        if now - self._fetched_at >= 2 * self._refresh:
            raise ProblemError(
                503,
                "Service Unavailable",
                "The identity provider cannot be reached to check the token.",
                headers={"Retry-After": "5"},
            )
        return subject in self._subjects


class TokenVerifier:
    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        keys: KeySet,
        disabled: DisabledSubjects | None = None,
        leeway: float = 30.0,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.keys = keys
        self.disabled = disabled
        self.leeway = leeway

    async def verify(self, token: str) -> Actor:
        """The token's actor, or a 401 problem (503 when revocation cannot be checked)."""
        try:
            header = jwt.get_unverified_header(token)
        except InvalidTokenError as exc:
            raise invalid_token() from exc
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALGORITHMS or not isinstance(kid, str):
            raise invalid_token()
        key = await self.keys.key(kid)
        if key is None or key.algorithm_name != alg:
            raise invalid_token()
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except InvalidTokenError as exc:
            log.info("token refused: %s", type(exc).__name__)
            raise invalid_token() from exc
        actor = actor_from_claims(claims)
        if self.disabled is not None and await self.disabled.contains(actor.subject):
            raise invalid_token(_("The account is disabled."))
        return actor


def http_json(client: httpx.AsyncClient, url: str) -> JsonFetch:
    async def fetch() -> Mapping[str, Any]:
        reply = await client.get(url)
        reply.raise_for_status()
        document = reply.json()
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        return document

    return fetch


def discovered_jwks(client: httpx.AsyncClient, issuer: str) -> JsonFetch:
    """The JWKS at the `jwks_uri` of the issuer's discovery document (looked up every fetch:
    cheap, rare, and follows an issuer that moves its keys)."""
    discovery = http_json(client, issuer.rstrip("/") + "/.well-known/openid-configuration")

    async def fetch() -> Mapping[str, Any]:
        document = await discovery()
        if document.get("issuer") != issuer or not isinstance(document.get("jwks_uri"), str):
            raise ValueError("discovery document of another issuer")
        return await http_json(client, document["jwks_uri"])()

    return fetch


def subjects_from(fetch: JsonFetch) -> SubjectsFetch:
    async def subjects() -> frozenset[str]:
        document = await fetch()
        return frozenset(str(s) for s in document.get("subjects", []))

    return subjects


@dataclass(frozen=True)
class IdentityConfig:
    issuer: str
    audience: str
    jwks_url: str | None = None
    disabled_url: str | None = None
    leeway: float = 30.0
    jwks_ttl: float = 300.0
    jwks_min_refresh: float = 10.0
    disabled_refresh: float = 30.0


def config_of(settings: ServiceSettings) -> IdentityConfig | None:
    """The settings' issuer, or None when no issuer is configured."""
    if not settings.cdt_oidc_issuer:
        return None
    return IdentityConfig(
        issuer=settings.cdt_oidc_issuer,
        audience=settings.cdt_oidc_audience,
        jwks_url=settings.cdt_oidc_jwks_url,
        disabled_url=settings.cdt_oidc_disabled_url,
        leeway=settings.oidc_leeway_seconds,
        jwks_ttl=settings.oidc_jwks_ttl_seconds,
        jwks_min_refresh=settings.oidc_jwks_min_refresh_seconds,
        disabled_refresh=settings.oidc_disabled_refresh_seconds,
    )


def remote_verifier(config: IdentityConfig, client: httpx.AsyncClient) -> TokenVerifier:
    """A verifier of the tokens of an issuer reached over HTTP (any service, any provider)."""
    fetch = (
        http_json(client, config.jwks_url)
        if config.jwks_url
        else discovered_jwks(client, config.issuer)
    )
    disabled = (
        DisabledSubjects(
            subjects_from(http_json(client, config.disabled_url)), refresh=config.disabled_refresh
        )
        if config.disabled_url
        else None
    )
    return TokenVerifier(
        issuer=config.issuer,
        audience=config.audience,
        keys=KeySet(fetch, ttl=config.jwks_ttl, min_refresh=config.jwks_min_refresh),
        disabled=disabled,
        leeway=config.leeway,
    )


def roles_claim(grants: Sequence[RoleGrant]) -> list[dict[str, str | None]]:
    return [{"role": g.role, "unit": g.unit} for g in grants]
