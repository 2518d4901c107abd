"""The only wiring of the teams service."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from common.app import create_app
from common.audit_api import audit_router
from common.ratelimit import RateLimiter
from common.runtime import ConsumerSpec, ServiceRuntime
from common.settings import ServiceSettings
from teams import api, api_units
from teams.adapters import service_tables
from teams.handlers import partner_replica_handler
from teams.settings import TeamsSettings

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


BULK_PATHS = ("/v1/teams:bulk", "/v1/members:bulk", "/v1/admin-units:import")


def build_app(runtime: ServiceRuntime) -> FastAPI:
    settings = runtime.settings
    bulk_limit = (
        settings.bulk_max_body_bytes
        if isinstance(settings, TeamsSettings)
        else TeamsSettings.model_fields["bulk_max_body_bytes"].default
    )
    app = create_app(
        runtime=runtime,
        body_limits=dict.fromkeys(BULK_PATHS, bulk_limit),
        routers=[api_units.router, api.router, audit_router()],
        title="CDT teams",
        description="Administrative units, teams, members and training.",
    )
    app.state.partner_limiter = RateLimiter()
    return app
