"""The only wiring of the scoring service."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from common.app import create_app
from common.contracts.scoring import ScoreLatest, ScoreUpdated
from common.envelope import Mirror
from common.runtime import ConsumerSpec, ServiceRuntime
from common.settings import ServiceSettings
from scoring import api
from scoring.adapters import service_tables
from scoring.handlers import scoring_handler
from scoring.use_cases import ScorePublisher, rebuild_if_missing

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
ACTIVITY_GROUP = "scoring"
ROSTER_GROUP = "scoring-roster"
GROUPS = (ACTIVITY_GROUP, ROSTER_GROUP)
SCORE_LATEST_MIRROR = Mirror.of(ScoreUpdated, ScoreLatest)


class ScoringRuntime(ServiceRuntime):
    """The common runtime plus the score publisher (coalesces dirty subjects every ~200 ms)."""

    def __init__(self, *, settings: ServiceSettings, publish_interval: float = 0.2) -> None:
        super().__init__(
            settings=settings,
            tables=service_tables,
            migrations_dir=MIGRATIONS,
            # Two consumers, one batch handler: a roster batch (a registry import brings
            # thousands) runs beside the activity batches instead of ahead of them. They share
            # teams the way two workers do: every batch locks its teams first, in id order.
            consumers=[ConsumerSpec.declared(group, handler=scoring_handler()) for group in GROUPS],
            # One outbox row per score: the relay sends it to the history topic and, as a
            # ScoreLatest, to the compacted one.
            mirrors=[SCORE_LATEST_MIRROR],
        )
        self.publisher = ScorePublisher(self, interval=publish_interval)

    async def start(self, *, workers: bool) -> None:
        if workers:
            # Before any consumer batch: a batch would make the indicators look present.
            if self.settings.run_migrations:
                await self.migrate()
            await self._rebuild_if_missing()
        await super().start(workers=workers)
        if workers:
            self._spawn("score-publisher", self.publisher.run)

    async def _rebuild_if_missing(self) -> None:
        async with self.unit_of_work() as uow:
            if await rebuild_if_missing(uow.session) is not None:
                await uow.commit()

    async def stop(self) -> None:
        self.publisher.stop()
        await super().stop()


def build_runtime(settings: ServiceSettings) -> ServiceRuntime:
    return ScoringRuntime(settings=settings)


def build_app(runtime: ServiceRuntime) -> FastAPI:
    return create_app(
        runtime=runtime,
        routers=[api.router],
        title="CDT scoring",
        description="Indicators and evaluation scores for every team and level.",
    )
