"""The only wiring of the notifications service.

Besides the relay and the consumer, the worker side runs two loops of its own: the webhook
delivery worker and the scheduled inactivity sweep. The clock is injected here so tests can
move time forward without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from fastapi import FastAPI

from common.app import create_app
from common.audit_api import audit_router
from common.runtime import ConsumerSpec, ServiceRuntime
from common.settings import ServiceSettings
from notifications.adapters import ScoreStates, service_tables
from notifications.api import router
from notifications.delivery import DeliveryWorker
from notifications.domain import Clock, system_clock
from notifications.handlers import notifications_handler, sweep
from notifications.settings import NotificationsSettings

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
GROUP = "notifications"
log = logging.getLogger(__name__)


class NotificationsRuntime(ServiceRuntime):
    def __init__(self, *, settings: NotificationsSettings, clock: Clock) -> None:
        self.score_states = ScoreStates()
        super().__init__(
            settings=settings,
            tables=service_tables,
            migrations_dir=MIGRATIONS,
            consumers=[
                ConsumerSpec.declared(
                    GROUP,
                    handler=notifications_handler(clock, score_states=self.score_states),
                    on_rebalance=self.score_states.forget,
                )
            ],
        )
        self.notifications = settings
        self.clock = clock
        self._loops_stopping = asyncio.Event()

    async def start(self, *, workers: bool) -> None:
        await super().start(workers=workers)
        if not workers:
            return
        self._spawn("inactivity-sweep", self._sweep_loop)
        if self.notifications.webhook_worker:
            worker = DeliveryWorker(
                sessions=self.sessions,
                settings=self.notifications,
                stopping=self._loops_stopping,
                tracer=self.tracer,
            )
            self._spawn("webhook-deliveries", worker.run)

    async def stop(self) -> None:
        self._loops_stopping.set()
        await super().stop()

    async def sweep_once(self) -> tuple[int, int] | None:
        """One inactivity sweep at the injected clock's now: (raised, resolved)."""
        async with self.unit_of_work() as uow:
            return await sweep(uow, now=self.clock())

    async def _sweep_loop(self) -> None:
        while not self._loops_stopping.is_set():
            try:
                result = await self.sweep_once()
                if result and any(result):
                    log.info("inactivity sweep: %d raised, %d resolved", *result)
            except Exception:
                log.exception("inactivity sweep failed; next run as scheduled")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._loops_stopping.wait(), timeout=self.notifications.sweep_interval_seconds
                )


def build_runtime(settings: ServiceSettings, *, clock: Clock = system_clock) -> ServiceRuntime:
    if not isinstance(settings, NotificationsSettings):
        raise TypeError("the notifications service needs NotificationsSettings")
    return NotificationsRuntime(settings=settings, clock=clock)


def build_app(runtime: ServiceRuntime) -> FastAPI:
    return create_app(
        runtime=runtime,
        routers=[router, audit_router()],
        title="CDT notifications",
        description="Alert rules, alerts (inbox), webhook subscriptions and their delivery log.",
    )
