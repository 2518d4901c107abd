"""`make run`: Postgres, Kafka, topics, migrations and the four services in the foreground.

Every line is prefixed with its process's name; Ctrl-C stops everything; data under `.data/` is
reused by the next run.

Crash safety: children also die with this supervisor when it is killed (PDEATHSIG: services at
once by SIGKILL, PostgreSQL by a fast shutdown, Kafka by a controlled one), and a run holds a
lock on its data dir, so whatever of that data dir is still running when the lock is free was
left by a dead run: its PostgreSQL and Kafka are stopped and their stale lock files removed
before starting again.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from functools import partial
from pathlib import Path
from typing import IO

from devstack.infra import Infra, provide
from devstack.procs import pump_lines, spawn, stop_process, wait_until

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {"teams": 8001, "activities": 8002, "scoring": 8003, "notifications": 8004}
COLORS = {
    "teams": 32,
    "activities": 34,
    "scoring": 35,
    "notifications": 36,
    "postgres": 33,
    "kafka": 31,
    "run": 1,
}
_print_lock = threading.Lock()
LOCAL_ISSUER = f"http://127.0.0.1:{SERVICES['teams']}"  # teams' default TEAMS_ISSUER_URL


def say(line: str) -> None:
    with _print_lock:
        print(line, flush=True)


def prefix(name: str) -> str:
    tag = f"{name:<13}|"
    return f"\033[{COLORS.get(name, 0)}m{tag}\033[0m" if sys.stdout.isatty() else tag


class _Pipe:
    """A writable file whose lines are printed with a prefix (for infra processes)."""

    def __init__(self, name: str) -> None:
        read_fd, write_fd = os.pipe()
        self._writer = os.fdopen(write_fd, "w")
        pump_lines(os.fdopen(read_fd), prefix(name), say)

    def fileno(self) -> int:
        return self._writer.fileno()

    def write(self, text: str) -> int:
        return self._writer.write(text)

    def flush(self) -> None:
        self._writer.flush()


def admin_token(data_dir: Path) -> str:
    if token := os.environ.get("CDT_ADMIN_TOKEN"):
        return token
    path = data_dir / "admin-token"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def service_env(infra: Infra, *, data_dir: Path, token: str) -> dict[str, str]:
    """The environment each service process gets from `make run` (and the load test's stack)."""
    return {
        **os.environ,
        "DATABASE_URL": infra.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap_servers,
        **infra.kafka_env,
        "CDT_ADMIN_TOKEN": token,
        # Every service verifies access tokens issued by the teams service (its JWKS and its
        # list of disabled accounts); an environment naming another provider wins.
        "CDT_OIDC_ISSUER": os.environ.get("CDT_OIDC_ISSUER", LOCAL_ISSUER),
        "CDT_OIDC_DISABLED_URL": os.environ.get(
            "CDT_OIDC_DISABLED_URL", f"{LOCAL_ISSUER}/v1/auth/disabled-subjects"
        ),
        "CDT_TRACE_FILE": str(data_dir / "traces.jsonl"),
        "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("libs", "services", "deploy")),
        "PYTHONUNBUFFERED": "1",
    }


def kafka_principals(infra: Infra) -> dict[str, dict[str, str]]:
    """Each service's own Kafka principal, allowed exactly its topics and groups, with a new
    password each run (`common.kafka_access`); by service, the environment that selects it.
    The topics exist already (created as the superuser), so the services do not try to."""
    from common.kafka_access import provision_services, service_client_env

    admin = infra.kafka_admin
    if not admin.kafka_security_protocol.startswith("SASL_"):
        return {name: {} for name in SERVICES}  # a broker without SASL: nobody logs in
    passwords = asyncio.run(provision_services(admin))
    return {
        name: {**service_client_env(name, passwords[name]), "CDT_CREATE_TOPICS": "false"}
        for name in SERVICES
    }


def kafka_hint(infra: Infra) -> list[str]:
    """Where the broker is and how an operator's console tools log in as the superuser."""
    lines = [f"kafka: {infra.kafka_bootstrap_servers} (SASL SCRAM-SHA-512, ACLs)"]
    if infra.kafka is not None:
        properties = infra.kafka.data_dir / "admin.properties"
        lines += [
            f"  superuser client properties: {properties}",
            f"  e.g. kafka-topics.sh --bootstrap-server {infra.kafka_bootstrap_servers} "
            f"--command-config {properties} --list",
            "  an agency's read-only principal: .venv/bin/python -m common.kafka_access "
            f"--admin-config {properties} add-subscriber --name <agency>",
        ]
    return lines


def first_admin_hint(infra: Infra, *, issuer: str) -> list[str]:
    """How to get a first administrator's access token from the local identity provider."""
    if issuer != LOCAL_ISSUER:
        return []  # another provider manages the accounts
    return [
        "first administrator (prints a one-time invitation code, then the requests that set",
        "a password and get an access token for every service):",
        f"  DATABASE_URL='{infra.database_url}' PYTHONPATH=libs:services \\",
        "    .venv/bin/python -m teams create-admin --username admin",
    ]


def ready_lines(infra: Infra, *, data_dir: Path, token: str, env: dict[str, str]) -> list[str]:
    """What an operator needs once everything is up: URLs, token, broker, first account."""
    return [
        *(f"  {name:<13} http://127.0.0.1:{port}/docs" for name, port in SERVICES.items()),
        f"operator token: {token}  (also in {data_dir / 'admin-token'})",
        *kafka_hint(infra),
        *first_admin_hint(infra, issuer=env["CDT_OIDC_ISSUER"]),
        "Ctrl-C to stop",
    ]


def ready(url: str) -> bool:
    """The service at `url` answers `/readyz` with 200 (make run's and the load test's check)."""
    try:
        # `url` is our own http base URL (make run, --base-url), never user input.
        with urllib.request.urlopen(f"{url}/readyz", timeout=2) as reply:  # noqa: S310
            return bool(reply.status == 200)
    except OSError:
        return False


def _ready_or_stopping(port: int, stopping: threading.Event) -> bool:
    return stopping.is_set() or ready(f"http://127.0.0.1:{port}")


def _lock(data_dir: Path) -> IO[str] | None:
    """An exclusive lock on `data_dir` for as long as this process lives (the kernel drops it
    when the process dies, however it dies); None when another run holds it."""
    lock = (data_dir / "run.lock").open("a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    return lock


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".data")
    args = parser.parse_args()
    data_dir: Path = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)

    lock = _lock(data_dir)
    if lock is None:
        say(f"{prefix('run')} another `make run` is using {data_dir}; stop it first")
        return 1

    stopping = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())

    started = time.monotonic()
    say(f"{prefix('run')} starting PostgreSQL and Kafka (data in {data_dir})")
    infra = provide(data_dir, postgres_log=_Pipe("postgres"), kafka_log=_Pipe("kafka"))  # type: ignore[arg-type]
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        say(
            f"{prefix('run')} infrastructure up in {time.monotonic() - started:.1f} s: "
            f"postgres={infra.database_url.rsplit('@', 1)[-1]} "
            f"kafka={infra.kafka_bootstrap_servers}"
        )
        from common.kafka import ensure_topics

        created = asyncio.run(
            ensure_topics(infra.kafka_bootstrap_servers, security=infra.kafka_admin)
        )
        principals = kafka_principals(infra)
        say(f"{prefix('run')} topics ready ({len(created)} created), service principals set")
        token = admin_token(data_dir)
        env = service_env(infra, data_dir=data_dir, token=token)
        for name in SERVICES:
            # SIGKILL, not a drain, when the supervisor dies: a drain waits on Kafka and
            # PostgreSQL, which are stopping too, and held the ports for a minute. A service
            # killed mid-batch is a case it handles anyway (outbox, offsets after commit).
            proc = spawn(
                [sys.executable, "-m", name, "api"],
                env={**env, **principals[name]},
                cwd=ROOT,
                on_parent_death=signal.SIGKILL,
            )
            assert proc.stdout is not None
            pump_lines(proc.stdout, prefix(name), say)
            procs[name] = proc
        for name, port in SERVICES.items():
            wait_until(
                partial(_ready_or_stopping, port, stopping),
                timeout=120,
                what=name,
                proc=procs[name],
            )
        if not stopping.is_set():
            say(f"{prefix('run')} all four services ready in {time.monotonic() - started:.1f} s")
            for line in ready_lines(infra, data_dir=data_dir, token=token, env=env):
                say(f"{prefix('run')} {line}")
        while not stopping.is_set():
            for name, proc in procs.items():
                if proc.poll() is not None:
                    say(f"{prefix('run')} {name} exited with {proc.returncode}; stopping")
                    stopping.set()
            stopping.wait(1)
    finally:
        say(f"{prefix('run')} stopping services")
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            stop_process(proc, timeout=30)
        say(f"{prefix('run')} stopping Kafka and PostgreSQL")
        infra.stop()
        say(f"{prefix('run')} stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
