"""`make run` after a crash: a power cut (every process killed) or a killed supervisor (its
children left alone) is followed at once by a new `make run`, which comes up by itself."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from devstack.postgres import postgres_bindir
from tests.e2e.test_make_run import PORTS, Stack, alive, descendants


@pytest.fixture
def stack_env() -> dict[str, str]:
    root = Path(__file__).resolve().parents[2]
    return {
        **{
            k: v
            for k, v in os.environ.items()
            if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "CDT_ADMIN_TOKEN")
        },
        "CDT_ENV": "test",
        "PYTHONPATH": os.pathsep.join(str(root / p) for p in ("libs", "services", "deploy", ".")),
        "PYTHONUNBUFFERED": "1",
    }


def all_ready() -> None:
    for name, port in PORTS.items():
        reply = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert reply.status_code == 200, (name, reply.text)


def restart(data_dir: Path, env: dict[str, str], family: set[int]) -> None:
    again = Stack(data_dir, env)
    try:
        took = again.wait_for("all four services ready", timeout=240)
        print(f"[make run] up again after the crash in {took:.1f} s")
        all_ready()
    finally:
        again.stop()
        for pid in family:  # never leave the crashed run's processes to the next test
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert again.proc.returncode == 0


def test_make_run_after_a_power_cut(workdir, stack_env) -> None:  # type: ignore[no-untyped-def]
    """Every process SIGKILLed: PostgreSQL's lock files name a postmaster that is dead (or a
    zombie until init reaps it), and the next run starts within a second."""
    data_dir = workdir / "power-cut"
    stack = Stack(data_dir, stack_env)
    stack.wait_for("all four services ready", timeout=240)
    family = descendants(stack.proc.pid)
    assert any("postgres" in Path(f"/proc/{pid}/cmdline").read_text() for pid in family)
    for pid in [stack.proc.pid, *family]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    stack.proc.wait(timeout=10)
    restart(data_dir, stack_env, family)


def test_make_run_after_its_supervisor_was_killed(workdir, stack_env) -> None:  # type: ignore[no-untyped-def]
    """Only the supervisor SIGKILLed, with a developer's psql session open on its database:
    every child is gone within seconds (by pid), and the next run comes up."""
    data_dir = workdir / "supervisor-killed"
    stack = Stack(data_dir, stack_env)
    stack.wait_for("all four services ready", timeout=240)
    family = descendants(stack.proc.pid)
    postgres = data_dir / "postgres"
    psql = subprocess.Popen(  # a client outside the stack: a plain SIGTERM would wait for it
        [
            str(postgres_bindir() / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            (postgres / "port").read_text().strip(),
            "-U",
            "cdt",
            "-d",
            "cdt",
            "-q",
        ],
        env={**os.environ, "PGPASSWORD": (postgres / "password").read_text().strip()},
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1)
        assert psql.poll() is None, "psql connected"
        os.kill(stack.proc.pid, signal.SIGKILL)
        stack.proc.wait(timeout=10)
        killed = time.monotonic()
        while (left := [pid for pid in family if alive(pid)]) and time.monotonic() - killed < 10:
            time.sleep(0.1)
        print(f"\n[make run] children gone {time.monotonic() - killed:.1f} s after the supervisor")
        assert not left, [Path(f"/proc/{pid}/cmdline").read_bytes()[:80] for pid in left]
        restart(data_dir, stack_env, family)
    finally:
        psql.kill()
        psql.wait()
        for pid in family:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
