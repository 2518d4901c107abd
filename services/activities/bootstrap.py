"""The only wiring of the activities service."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from activities.adapters import service_tables
from activities.handlers import teams_replica_handler
from common.app import create_app
from common.runtime import ConsumerSpec, ServiceRuntime
from common.settings import ServiceSettings
from common.topics import CONSUMER_GROUPS

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
GROUP = "activities"


def build_runtime(settings: ServiceSettings) -> ServiceRuntime:
    return ServiceRuntime(
        settings=settings,
        tables=service_tables,
        migrations_dir=MIGRATIONS,
        consumers=[
            ConsumerSpec(
                group=GROUP,
                topics=[t.name for t in CONSUMER_GROUPS[GROUP]],
                handler=teams_replica_handler(),
            )
        ],
    )


def build_app(runtime: ServiceRuntime) -> FastAPI:
    return create_app(
        runtime=runtime,
        routers=[],
        title="CDT activities",
        description="Partner apps post household visits, group sessions and support desks.",
    )
