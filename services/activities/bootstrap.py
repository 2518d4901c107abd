"""The only wiring of the activities service."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI

from activities.adapters import service_tables
from activities.api import ActivitiesContext, router
from activities.handlers import teams_replica_handler
from activities.settings import ActivitiesSettings, household_key
from activities.use_cases import Ingestor
from common.app import create_app
from common.audit_api import audit_router
from common.ratelimit import RateLimiter
from common.runtime import ConsumerSpec, ServiceRuntime
from common.settings import ServiceSettings

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
GROUP = "activities"


def build_runtime(settings: ServiceSettings) -> ServiceRuntime:
    return ServiceRuntime(
        settings=settings,
        tables=service_tables,
        migrations_dir=MIGRATIONS,
        consumers=[ConsumerSpec.declared(GROUP, handler=teams_replica_handler())],
    )


def build_app(runtime: ServiceRuntime) -> FastAPI:
    settings = runtime.settings
    if not isinstance(settings, ActivitiesSettings):
        settings = ActivitiesSettings()
    app = create_app(
        runtime=runtime,
        routers=[router, audit_router()],
        title="CDT activities",
        description=(
            "Partner apps post household visits, group sessions and support desks.\n\n"
            "Rejections whose `retryable` is true (`team_unknown`, `team_unit_unknown`, "
            "`member_unknown`) mean this service has not yet learnt the team or member from "
            "the teams service (a few seconds after it is created there): post the same "
            "event again later, with the same `id`; it is never stored twice."
        ),
    )
    app.state.activities = ActivitiesContext(
        ingestor=Ingestor(
            household_key=household_key(settings),
            clock_skew=timedelta(seconds=settings.clock_skew_seconds),
        ),
        limiter=RateLimiter(),
        default_rate_limit=settings.default_partner_rate_limit,
    )
    return app
