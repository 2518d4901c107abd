"""Where the real Postgres and Kafka come from: env vars, local processes, or testcontainers."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from devstack.kafka import LocalKafka
from devstack.postgres import LocalPostgres


@dataclass
class Infra:
    database_url: str
    kafka_bootstrap_servers: str
    postgres: LocalPostgres | None = None
    kafka: LocalKafka | None = None
    _stops: list[Callable[[], None]] = field(default_factory=list)

    def stop(self) -> None:
        for stop in reversed(self._stops):
            stop()
        self._stops.clear()


def provide(
    data_dir: Path,
    *,
    postgres_log: IO[str] | None = None,
    kafka_log: IO[str] | None = None,
    kafka_heap: str = "512m",
) -> Infra:
    """`DATABASE_URL` / `KAFKA_BOOTSTRAP_SERVERS` win; else `CDT_INFRA=docker` uses
    testcontainers; else local processes with their data under `data_dir`."""
    if os.environ.get("CDT_INFRA") == "docker":
        return _containers()
    infra = Infra(database_url="", kafka_bootstrap_servers="")
    try:
        if url := os.environ.get("DATABASE_URL"):
            infra.database_url = url
        else:
            infra.postgres = LocalPostgres(data_dir / "postgres")
            infra.database_url = infra.postgres.start(log=postgres_log)
            infra._stops.append(infra.postgres.stop)
        if servers := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
            infra.kafka_bootstrap_servers = servers
        else:
            infra.kafka = LocalKafka(data_dir / "kafka", heap=kafka_heap)
            infra.kafka_bootstrap_servers = infra.kafka.start(log=kafka_log)
            infra._stops.append(infra.kafka.stop)
    except BaseException:
        infra.stop()
        raise
    return infra


def _containers() -> Infra:
    from testcontainers.kafka import KafkaContainer
    from testcontainers.postgres import PostgresContainer

    from devstack.kafka import kafka_version

    postgres = PostgresContainer("postgres:15", driver="asyncpg").start()
    kafka = KafkaContainer(f"apache/kafka:{kafka_version()}").with_kraft().start()
    infra = Infra(
        database_url=postgres.get_connection_url(),
        kafka_bootstrap_servers=kafka.get_bootstrap_server(),
    )
    infra._stops += [postgres.stop, kafka.stop]
    return infra
