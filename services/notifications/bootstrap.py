"""The only wiring of the notifications service (consumers arrive with its own issue)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from common.app import create_app
from common.runtime import ServiceRuntime
from common.settings import ServiceSettings
from notifications.adapters import service_tables

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def build_runtime(settings: ServiceSettings) -> ServiceRuntime:
    return ServiceRuntime(settings=settings, tables=service_tables, migrations_dir=MIGRATIONS)


def build_app(runtime: ServiceRuntime) -> FastAPI:
    return create_app(
        runtime=runtime,
        routers=[],
        title="CDT notifications",
        description="Alerts to webhooks and an inbox.",
    )
