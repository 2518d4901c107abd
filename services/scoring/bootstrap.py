"""The only wiring of the scoring service."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from fastapi import FastAPI

from common.app import create_app
from common.audit_api import audit_router
from common.contracts.scoring import ScoreLatest, ScoreUpdated
from common.envelope import Mirror
from common.runtime import ConsumerSpec, ServiceRuntime
from common.settings import ServiceSettings
from scoring import api
from scoring.adapters import keep_score_history, service_tables
from scoring.handlers import alert_flags_handler, scoring_handler
from scoring.settings import ScoringSettings
from scoring.use_cases import ScorePublisher, rebuild_if_missing
from scoring.use_cases.changelog import ScoreChangelogRelay

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
HISTORY_UPKEEP_SECONDS = 3600
log = logging.getLogger(__name__)
ACTIVITY_GROUP = "scoring"
ROSTER_GROUP = "scoring-roster"
GROUPS = (ACTIVITY_GROUP, ROSTER_GROUP)
ALERTS_GROUP = "scoring-alerts"
SCORE_LATEST_MIRROR = Mirror.of(ScoreUpdated, ScoreLatest)


class ScoringRuntime(ServiceRuntime):
    """The common runtime plus the score publisher (coalesces dirty subjects every ~200 ms)."""

    def __init__(self, *, settings: ServiceSettings, publish_interval: float = 0.2) -> None:
        super().__init__(
            settings=settings,
            tables=service_tables,
            migrations_dir=MIGRATIONS,
            # Activities and the roster in two consumers, one batch handler: a roster batch (a
            # registry import brings thousands) runs beside the activity batches instead of
            # ahead of them. They share teams the way two workers do: every batch locks its
            # teams first, in id order. A third keeps the teams flagged by suspicious activity.
            consumers=[
                *(ConsumerSpec.declared(group, handler=scoring_handler()) for group in GROUPS),
                ConsumerSpec.declared(ALERTS_GROUP, handler=alert_flags_handler()),
            ],
            # Scores go out from their history (`changelog`), not the outbox; score rows still
            # in the outbox from before it are mirrored as they always were.
            mirrors=[SCORE_LATEST_MIRROR],
        )
        self.changelog = ScoreChangelogRelay(
            self, mirrors=[SCORE_LATEST_MIRROR], renew_producer=self._renew_producer
        )
        self.publisher = ScorePublisher(self, interval=publish_interval, changelog=self.changelog)
        scoring = settings if isinstance(settings, ScoringSettings) else ScoringSettings()
        self.history_months = scoring.history_months

    async def start(self, *, workers: bool) -> None:
        if workers:
            # Before any consumer batch: a batch would make the indicators look present.
            if self.settings.run_migrations:
                await self.migrate()
            await self._rebuild_if_missing()
        await super().start(workers=workers)
        if workers:
            self._spawn("score-publisher", self.publisher.run)
            self._spawn("score-changelog", self.changelog.run)
            self._spawn("score-history-partitions", self._keep_history)

    async def _rebuild_if_missing(self) -> None:
        async with self.unit_of_work() as uow:
            if await rebuild_if_missing(uow.session) is not None:
                await uow.commit()

    async def _keep_history(self) -> None:
        """Every hour: next month's partition of `score_history` made, expired ones dropped."""
        while not self.draining:
            try:
                async with self.unit_of_work() as uow:
                    await keep_score_history(uow.session, months=self.history_months)
                    await uow.commit()
            except Exception:
                log.exception("score history upkeep failed; retrying in an hour")
            await asyncio.sleep(HISTORY_UPKEEP_SECONDS)

    async def stop(self) -> None:
        self.publisher.stop()
        self.changelog.stop()
        await super().stop()


def build_runtime(settings: ServiceSettings) -> ServiceRuntime:
    return ScoringRuntime(settings=settings)


def build_app(runtime: ServiceRuntime) -> FastAPI:
    return create_app(
        runtime=runtime,
        routers=[api.router, audit_router()],
        title="CDT scoring",
        description="Indicators and evaluation scores for every team and level.",
    )
