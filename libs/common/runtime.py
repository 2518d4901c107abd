"""A service's process-wide resources and background work, started and drained in one place."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.consumer import ConsumerRunner, Handler
from common.db import DirectConnections, UnitOfWork, create_engine
from common.envelope import Mirror
from common.kafka import KafkaAccessError, check_access, ensure_topics, make_producer
from common.lag import LagMonitor
from common.migrations import upgrade
from common.outbox_tables import ServiceTables
from common.relay import DedupeRetention, OutboxRelay
from common.settings import ServiceSettings
from common.telemetry import build_tracer_provider
from common.topics import CONSUMER_GROUPS

log = logging.getLogger(__name__)

READINESS_TIMEOUT_SECONDS = 2.0
DRAIN_TIMEOUT_SECONDS = 20.0


@dataclass(frozen=True)
class ConsumerSpec:
    group: str
    topics: Sequence[str]
    handler: Handler
    # what the handler keeps in memory about its partitions is forgotten on every rebalance
    on_rebalance: Callable[[], None] | None = None

    @classmethod
    def declared(
        cls, group: str, *, handler: Handler, on_rebalance: Callable[[], None] | None = None
    ) -> ConsumerSpec:
        """The group as `common.topics.CONSUMER_GROUPS` declares it (the one list of who reads
        what, which the topic set-up and the lag metrics use too)."""
        return cls(
            group=group,
            topics=[t.name for t in CONSUMER_GROUPS[group]],
            handler=handler,
            on_rebalance=on_rebalance,
        )


class ServiceRuntime:
    def __init__(
        self,
        *,
        settings: ServiceSettings,
        tables: ServiceTables,
        migrations_dir: Path,
        consumers: Sequence[ConsumerSpec] = (),
        mirrors: Sequence[Mirror] = (),
    ) -> None:
        self.settings = settings
        self.mirrors = list(mirrors)
        self.tables = tables
        self.migrations_dir = migrations_dir
        self.consumer_specs = list(consumers)
        self.tracer_provider = build_tracer_provider(settings)
        self.tracer = self.tracer_provider.get_tracer(f"cdt.{settings.service_name}")
        self.engine = create_engine(settings)
        if settings.trace_sql:
            # The instrumentation declares SQLAlchemy < 2.1 but only hooks engine events, which
            # 2.1 keeps; without skip_dep_check it silently instruments nothing.
            SQLAlchemyInstrumentor().instrument(
                engine=self.engine.sync_engine,
                tracer_provider=self.tracer_provider,
                skip_dep_check=True,
            )
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.direct = DirectConnections(settings, tracer=self.tracer)
        self.producer: AIOKafkaProducer | None = None
        # Producers replaced after a fatal error: consumers may still hold them (dead letters).
        self._retired_producers: list[AIOKafkaProducer] = []
        self.relay: OutboxRelay | None = None
        self.consumers: list[ConsumerRunner] = []
        self.lag_monitor: LagMonitor | None = None
        self.draining = False
        self._tasks: list[asyncio.Task[None]] = []
        self._jobs: set[asyncio.Task[None]] = set()
        self._producer_ready = asyncio.Event()

    def unit_of_work(self) -> UnitOfWork:
        return UnitOfWork(
            self.sessions,
            self.tables,
            sql_tracer=self.tracer if self.settings.trace_sql else None,
        )

    async def migrate(self) -> None:
        await asyncio.to_thread(
            upgrade,
            migrations_dir=self.migrations_dir,
            database_url=self.settings.database_url,
            schema=self.settings.schema_name,
        )

    async def start(self, *, workers: bool) -> None:
        # Refused credentials end the start here, with the broker's reason: every client
        # below would otherwise retry them for ever as if Kafka were down.
        await check_access(self.settings)
        if self.settings.run_migrations:
            await self.migrate()
        self._spawn("kafka-producer", self._start_producer)
        if self.consumer_specs:
            self.lag_monitor = LagMonitor(
                bootstrap_servers=self.settings.kafka_bootstrap_servers,
                groups={spec.group: list(spec.topics) for spec in self.consumer_specs},
                interval=self.settings.lag_interval_seconds,
                security=self.settings,
            )
            self._spawn("lag-monitor", self.lag_monitor.run)
        if workers:
            self._spawn("outbox-relay", self._run_relay)
            for spec in self.consumer_specs:
                self._spawn(f"consumer-{spec.group}", self._consumer_runner(spec))

    async def stop(self) -> None:
        """Graceful drain: readiness turns false, consumers commit what they hold, then close."""
        self.draining = True
        for consumer in self.consumers:
            consumer.stop()
        if self.relay is not None:
            self.relay.stop()
        if self.lag_monitor is not None:
            self.lag_monitor.stop()
        for job in list(self._jobs):  # a job is long (a national recompute): it starts again
            job.cancel()
        await asyncio.gather(*self._jobs, return_exceptions=True)
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=DRAIN_TIMEOUT_SECONDS)
            if pending:
                log.warning(
                    "drain timed out after %.0f s; cancelling %s",
                    DRAIN_TIMEOUT_SECONDS,
                    ", ".join(sorted(task.get_name() for task in pending)),
                )
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for producer in [*self._retired_producers, self.producer]:
            if producer is not None:
                with contextlib.suppress(KafkaError, OSError):
                    await producer.stop()
        await self.direct.close()
        await self.engine.dispose()
        self.tracer_provider.shutdown()

    def start_job(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        """One-off background work a request started (a recompute): kept referenced until it
        ends, cancelled when the service stops. Not restarted: the job records its outcome."""
        job = asyncio.create_task(work, name=name)
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    def _spawn(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        self._tasks.append(asyncio.create_task(self._supervise(name, work), name=name))

    async def _supervise(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        """Restart background work that dies unexpectedly, until the service drains."""
        while not self.draining:
            try:
                await work()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s crashed; restarting in 2 s", name)
                await asyncio.sleep(2)

    async def _start_producer(self) -> None:
        while not self.draining:
            if self.settings.create_topics:
                with contextlib.suppress(KafkaError, OSError):
                    await ensure_topics(
                        self.settings.kafka_bootstrap_servers, security=self.settings
                    )
            producer = make_producer(
                self.settings.kafka_bootstrap_servers,
                client_id=self.settings.service_name,
                security=self.settings,
            )
            try:
                await producer.start()
            except (KafkaError, OSError):
                await producer.stop()
                await self._log_why_kafka_is_out_of_reach()
                await asyncio.sleep(2)
                continue
            self.producer = producer
            self._producer_ready.set()
            return

    async def _log_why_kafka_is_out_of_reach(self) -> None:
        """Down, or refusing our credentials (changed since the start): aiokafka reports both
        as "Unable to bootstrap"; the second needs a person, so it is an error, with the
        broker's reason."""
        try:
            await check_access(self.settings)
        except KafkaAccessError as refused:
            log.error("%s; retrying producer start", refused)
            return
        log.warning("Kafka not reachable yet; retrying producer start")

    async def _renew_producer(self) -> AIOKafkaProducer:
        """A new producer (new idempotent producer id) for the relay after a fatal producer
        error; the old one stays open for whoever holds it and is closed at stop."""
        producer = make_producer(
            self.settings.kafka_bootstrap_servers,
            client_id=self.settings.service_name,
            security=self.settings,
        )
        try:
            await producer.start()
        except BaseException:
            with contextlib.suppress(KafkaError, OSError):
                await producer.stop()
            raise
        if self.producer is not None:
            self._retired_producers.append(self.producer)
        self.producer = producer
        return producer

    async def _run_relay(self) -> None:
        await self._producer_ready.wait()
        assert self.producer is not None
        self.relay = OutboxRelay(
            service=self.settings.service_name,
            engine=self.engine,
            database_url=self.settings.database_url,
            tables=self.tables,
            producer=self.producer,
            tracer=self.tracer,
            batch_size=self.settings.relay_batch_size,
            poll_seconds=self.settings.relay_poll_seconds,
            linger_seconds=self.settings.relay_linger_seconds,
            retention=timedelta(hours=self.settings.outbox_retention_hours),
            dedupe=DedupeRetention(
                groups=tuple(spec.group for spec in self.consumer_specs),
                older_than=timedelta(hours=self.settings.dedupe_retention_hours),
            ),
            renew_producer=self._renew_producer,
            mirrors=self.mirrors,
        )
        await self.relay.run()

    def _consumer_runner(self, spec: ConsumerSpec) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            await self._producer_ready.wait()
            assert self.producer is not None
            runner = ConsumerRunner(
                group=spec.group,
                topics=spec.topics,
                handler=spec.handler,
                unit_of_work=self.unit_of_work,
                tables=self.tables,
                bootstrap_servers=self.settings.kafka_bootstrap_servers,
                producer=self.producer,
                tracer=self.tracer,
                batch_size=self.settings.consumer_batch_size,
                max_retries=self.settings.consumer_max_retries,
                session_timeout_ms=self.settings.consumer_session_timeout_ms,
                on_rebalance=spec.on_rebalance,
                security=self.settings,
            )
            self.consumers.append(runner)
            try:
                await runner.run()
            finally:
                self.consumers.remove(runner)

        return run

    async def readiness(self) -> dict[str, bool]:
        database, kafka = await asyncio.gather(self._database_ok(), self._kafka_ok())
        return {"database": database, "kafka": kafka, "draining": self.draining}

    async def _database_ok(self) -> bool:
        try:
            async with asyncio.timeout(READINESS_TIMEOUT_SECONDS):
                async with self.engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    async def _kafka_ok(self) -> bool:
        if self.producer is None:
            return False
        try:
            async with asyncio.timeout(READINESS_TIMEOUT_SECONDS):
                metadata = await self.producer.client.fetch_all_metadata()
            return bool(metadata.brokers())
        except Exception:
            return False


def session_factory(runtime: ServiceRuntime) -> async_sessionmaker[AsyncSession]:
    return runtime.sessions
