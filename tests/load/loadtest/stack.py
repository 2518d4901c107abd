"""The system under test: a running `make run` (found by its ports and `.data/admin-token`),
given URLs, or a stack this tool starts itself like `make run` does (devstack)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from devstack.run import ready
from tests.load.loadtest.sampler import pid_listening

ROOT = Path(__file__).resolve().parents[3]
SERVICES = ("teams", "activities", "scoring", "notifications")
DEFAULT_PORTS = {"teams": 8001, "activities": 8002, "scoring": 8003, "notifications": 8004}


@dataclass
class Stack:
    urls: dict[str, str]
    token: str
    bootstrap: str
    database_url: str | None
    pids: dict[str, int]
    mode: str  # reused | external | started
    settings: dict[str, str] = field(default_factory=dict)
    _stops: list[Callable[[], None]] = field(default_factory=list)

    def stop(self) -> None:
        for stop in reversed(self._stops):
            stop()
        self._stops.clear()


def _token(data_dir: Path, given: str | None) -> str | None:
    if given:
        return given
    if token := os.environ.get("CDT_ADMIN_TOKEN"):
        return token
    path = data_dir / "admin-token"
    return path.read_text().strip() if path.exists() else None


def _local_infra_urls(data_dir: Path) -> tuple[str | None, str | None]:
    """The Postgres URL and Kafka bootstrap of a `make run` whose data is in `data_dir`."""
    database_url = os.environ.get("DATABASE_URL")
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if database_url is None and (data_dir / "postgres" / "port").exists():
        try:
            from devstack.postgres import LocalPostgres

            database_url = LocalPostgres(data_dir / "postgres").url
        except (OSError, RuntimeError):
            database_url = None
    if bootstrap is None and (data_dir / "kafka" / "ports").exists():
        bootstrap = f"127.0.0.1:{(data_dir / 'kafka' / 'ports').read_text().split()[0]}"
    return database_url, bootstrap


def _infra_pids(database_url: str | None, bootstrap: str | None) -> dict[str, int]:
    pids: dict[str, int] = {}
    if database_url and "127.0.0.1:" in database_url:
        port = int(database_url.rsplit("127.0.0.1:", 1)[1].split("/")[0])
        if (pid := pid_listening(port)) is not None:
            pids["postgres"] = pid
    if bootstrap and bootstrap.startswith("127.0.0.1:"):
        pid = pid_listening(int(bootstrap.rsplit(":", 1)[1]))
        if pid is not None:
            pids["kafka"] = pid
    return pids


def connect(
    *,
    host: str,
    ports: dict[str, int],
    data_dir: Path,
    token: str | None,
    bootstrap: str | None,
    database_url: str | None,
    mode: str,
) -> Stack | None:
    urls = {name: f"{host}:{ports[name]}" for name in SERVICES}
    if not all(ready(url) for url in urls.values()):
        return None
    found_token = _token(data_dir, token)
    local_db, local_kafka = _local_infra_urls(data_dir)
    bootstrap = bootstrap or local_kafka
    if found_token is None or bootstrap is None:
        raise SystemExit(
            "services answer but the operator token or Kafka is unknown: pass --token and --kafka"
        )
    database_url = database_url or local_db
    pids: dict[str, int] = {}
    if "127.0.0.1" in host or "localhost" in host:
        for name in SERVICES:
            if (pid := pid_listening(ports[name])) is not None:
                pids[name] = pid
        pids.update(_infra_pids(database_url, bootstrap))
    return Stack(urls, found_token, bootstrap, database_url, pids, mode)


def service_settings(trace_ratio: float) -> dict[str, str]:
    """What the started stack runs with (recorded in the report)."""
    return {
        "CDT_TRACE_SAMPLE_RATIO": str(trace_ratio),
        "CDT_TRACE_SQL": "false",
        "CDT_LOG_LEVEL": "WARNING",
        "CDT_LAG_INTERVAL_SECONDS": "1",
        "CDT_HOUSEHOLD_HMAC_KEY": "loadtest-household-hmac-key-0123456789",
    }


def start(
    *,
    data_dir: Path,
    ports: dict[str, int],
    trace_ratio: float,
    say: Callable[[str], None],
) -> Stack:
    """Postgres + Kafka (devstack.infra.provide) + topics + the four services, as `make run`."""
    from common.kafka import ensure_topics
    from devstack.infra import provide
    from devstack.procs import spawn, stop_process, wait_until
    from devstack.run import admin_token, kafka_principals, service_env

    data_dir.mkdir(parents=True, exist_ok=True)
    logs = data_dir / "loadtest" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    files: list[IO[str]] = [
        (logs / "postgres.log").open("a"),
        (logs / "kafka.log").open("a"),
    ]
    infra = provide(data_dir, postgres_log=files[0], kafka_log=files[1], kafka_heap="768m")
    stack = Stack(
        urls={name: f"http://127.0.0.1:{ports[name]}" for name in SERVICES},
        token="",
        bootstrap=infra.kafka_bootstrap_servers,
        database_url=infra.database_url,
        pids={},
        mode="started",
    )
    stack._stops.append(infra.stop)
    stack._stops.extend(f.close for f in files)
    try:
        if infra.postgres is not None and infra.postgres.proc is not None:
            stack.pids["postgres"] = infra.postgres.proc.pid
        if infra.kafka is not None and infra.kafka.proc is not None:
            stack.pids["kafka"] = infra.kafka.proc.pid
        os.environ.update(infra.kafka_env)  # the load tool's own clients: the superuser
        asyncio.run(ensure_topics(infra.kafka_bootstrap_servers))
        principals = kafka_principals(infra)
        stack.token = admin_token(data_dir)
        stack.settings = service_settings(trace_ratio)
        env = {
            **service_env(infra, data_dir=data_dir, token=stack.token),
            **{f"{name.upper()}_PORT": str(port) for name, port in ports.items()},
            **stack.settings,
        }
        procs: dict[str, subprocess.Popen[str]] = {}

        def stop_services() -> None:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs.values():
                stop_process(proc, timeout=30)

        stack._stops.append(stop_services)
        for name in SERVICES:
            log = (logs / f"{name}.log").open("a")
            files.append(log)
            procs[name] = spawn(
                [sys.executable, "-m", name, "api"],
                env={**env, **principals[name]},
                cwd=ROOT,
                log=log,
            )
            stack.pids[name] = procs[name].pid
        for name in SERVICES:
            url = stack.urls[name]
            wait_until(lambda url=url: ready(url), timeout=180, what=name, proc=procs[name])  # type: ignore[misc]
        say(f"stack started (logs in {logs}): " + ", ".join(stack.urls.values()))
    except BaseException:
        stack.stop()
        raise
    return stack
