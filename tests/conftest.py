"""Session-wide real infrastructure: one PostgreSQL and one Kafka broker for the whole run.

They are started as local processes (or taken from DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS, or
testcontainers with CDT_INFRA=docker) and torn down at the end.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from secrets import token_urlsafe

import pytest

from devstack.infra import Infra, provide
from devstack.kafka import admin_client_env

# Every broker this session starts (its own, the fault-injection stack's, those of single tests,
# `make run`'s) has the same superuser, and the tests' own Kafka clients log in as it
# (`kafka_client_options` reads the environment); tests of the principals and ACLs use their own
# credentials. A broker given by KAFKA_BOOTSTRAP_SERVERS comes with the environment's.
if "KAFKA_BOOTSTRAP_SERVERS" not in os.environ:
    os.environ.update(
        admin_client_env(os.environ.setdefault("CDT_KAFKA_ADMIN_PASSWORD", token_urlsafe(24)))
    )


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cdt-tests-"))
    path.chmod(0o755)  # PostgreSQL runs as an unprivileged user and must reach its data
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def infra(workdir: Path) -> Iterator[Infra]:
    started = time.monotonic()
    with (workdir / "postgres.log").open("w") as pg_log, (workdir / "kafka.log").open("w") as k_log:
        infra = provide(workdir / "infra", postgres_log=pg_log, kafka_log=k_log, kafka_heap="512m")
        os.environ.update(infra.kafka_env)
        from common.kafka import ensure_topics

        asyncio.run(ensure_topics(infra.kafka_bootstrap_servers))
        print(f"\n[infra] Postgres + Kafka ready in {time.monotonic() - started:.1f} s")
        try:
            yield infra
        finally:
            infra.stop()


@pytest.fixture(scope="session")
def service_env(infra: Infra, workdir: Path) -> dict[str, str]:
    """Environment for service settings and subprocesses in tests."""
    return {
        "DATABASE_URL": infra.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap_servers,
        **infra.kafka_env,
        "CDT_ADMIN_TOKEN": "test-operator-token",
        "CDT_ENV": "test",
        "CDT_TRACES_EXPORTER": "file",
        "CDT_TRACE_FILE": str(workdir / "traces.jsonl"),
        "CDT_RELAY_POLL_SECONDS": "0.2",
    }


@pytest.fixture(scope="session")
def subprocess_env(service_env: dict[str, str]) -> dict[str, str]:
    root = Path(__file__).resolve().parents[1]
    return {
        **os.environ,
        **service_env,
        "PYTHONPATH": os.pathsep.join(str(root / p) for p in ("libs", "services", "deploy", ".")),
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture(scope="session")
def apply_env(service_env: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in service_env}
    os.environ.update(service_env)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
