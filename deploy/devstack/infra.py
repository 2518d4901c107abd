"""Where the real Postgres and Kafka come from: env vars, local processes, or testcontainers."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from common.settings import KafkaSettings
from devstack.kafka import LocalKafka
from devstack.postgres import LocalPostgres


@dataclass
class Infra:
    database_url: str
    kafka_bootstrap_servers: str
    postgres: LocalPostgres | None = None
    kafka: LocalKafka | None = None
    # The `CDT_KAFKA_*` settings of the broker's superuser (empty: the environment's own, for a
    # broker given by KAFKA_BOOTSTRAP_SERVERS).
    kafka_env: dict[str, str] = field(default_factory=dict)
    _stops: list[Callable[[], None]] = field(default_factory=list)

    @property
    def kafka_admin(self) -> KafkaSettings:
        """The superuser's client settings: topics, principals and ACLs are provisioned as it."""
        values: dict[str, Any] = {**self.kafka_env}  # the environment fills in the rest
        return KafkaSettings(kafka_bootstrap_servers=self.kafka_bootstrap_servers, **values)

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
            infra.kafka_env = infra.kafka.client_env()
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
        # testcontainers' broker has no SASL listener: this path tests the code, not the ACLs.
        kafka_env={"CDT_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"},
    )
    infra._stops += [postgres.stop, kafka.stop]
    return infra
