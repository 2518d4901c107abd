"""The only wiring of the teams service."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from common.app import create_app
from common.audit_api import audit_router
from common.identity import DisabledSubjects, KeySet, TokenVerifier
from common.ratelimit import FailureLimiter, RateLimiter
from common.runtime import ConsumerSpec, ServiceRuntime
from common.settings import ServiceSettings
from teams import api, api_identity, api_units
from teams.adapters import service_tables
from teams.api_common import settings_of
from teams.handlers import partner_replica_handler
from teams.settings import TeamsSettings, signing_key_passphrase
from teams.use_cases import published_keys, recently_disabled

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
GROUP = "teams"


def build_runtime(settings: ServiceSettings) -> ServiceRuntime:
    return ServiceRuntime(
        settings=settings,
        tables=service_tables,
        migrations_dir=MIGRATIONS,
        consumers=[
            # Partner apps from activities: partner keys may read within their provinces.
            ConsumerSpec.declared(GROUP, handler=partner_replica_handler())
        ],
    )


LOCAL_KEYS_MIN_REFRESH = 1.0  # seconds
BULK_PATHS = ("/v1/teams:bulk", "/v1/members:bulk", "/v1/admin-units:import")


def build_app(runtime: ServiceRuntime) -> FastAPI:
    settings = runtime.settings
    bulk_limit = (
        settings.bulk_max_body_bytes
        if isinstance(settings, TeamsSettings)
        else TeamsSettings.model_fields["bulk_max_body_bytes"].default
    )
    local_issuer = settings.local_issuer if isinstance(settings, TeamsSettings) else True
    app = create_app(
        runtime=runtime,
        body_limits=dict.fromkeys(BULK_PATHS, bulk_limit),
        routers=[
            api_units.router,
            api.router,
            audit_router(),
            *([api_identity.router] if local_issuer else []),
        ],
        title="CDT teams",
        description="Administrative units, teams, members and training; the local identity "
        "provider (accounts, invitations, access tokens, JWKS) when no other is configured.",
    )
    app.state.partner_limiter = RateLimiter()
    if local_issuer:
        if signing_key_passphrase(settings_of(runtime)) is None:  # refused in prod
            log.warning(
                "TEAMS_SIGNING_KEY_PASSPHRASE is not set: the local issuer's signing keys are "
                "stored unencrypted. Set it outside development."
            )
        # Its own tokens are verified from its own tables: no HTTP call to itself.
        app.state.identity = local_verifier(runtime)
        app.state.login_limiter = FailureLimiter(window=settings_of(runtime).login_window_seconds)
    return app


def local_verifier(runtime: ServiceRuntime) -> TokenVerifier:
    settings = runtime.settings
    config = api_identity.issuer_config(runtime)

    async def keys() -> dict[str, Any]:
        async with runtime.sessions() as session:
            return await published_keys(session, config=config)

    async def disabled() -> frozenset[str]:
        async with runtime.sessions() as session:
            return frozenset(await recently_disabled(session, config=config))

    return TokenVerifier(
        issuer=config.issuer,
        audience=config.audience,
        keys=KeySet(
            keys,
            ttl=settings.oidc_jwks_ttl_seconds,
            # Its keys are a read of its own table, not a call to a remote issuer: a key another
            # replica just rotated in is learnt within a second, not after the remote interval.
            min_refresh=min(settings.oidc_jwks_min_refresh_seconds, LOCAL_KEYS_MIN_REFRESH),
        ),
        disabled=DisabledSubjects(disabled, refresh=settings.oidc_disabled_refresh_seconds),
        leeway=settings.oidc_leeway_seconds,
    )
