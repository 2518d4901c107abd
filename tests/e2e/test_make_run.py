"""`make run` on a machine with nothing running: Postgres, Kafka and the four services come up
ready; Ctrl-C leaves no process behind; a second run finds the data of the first."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
PORTS = {"teams": 8001, "activities": 8002, "scoring": 8003, "notifications": 8004}


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Stack:
    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "devstack.run", "--data-dir", str(data_dir)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if any(text in line for line in self.lines):
                return time.monotonic() - started
            assert self.proc.poll() is None, "".join(self.lines[-40:])
            time.sleep(0.2)
        raise AssertionError(f"no {text!r} after {timeout} s:\n" + "".join(self.lines[-40:]))

    def stop(self) -> set[int]:
        family = descendants(self.proc.pid)
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=90)
        return family


def test_make_run_brings_up_everything_and_stops_clean(workdir, subprocess_env) -> None:  # type: ignore[no-untyped-def]
    env = {
        k: v
        for k, v in subprocess_env.items()
        if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "CDT_ADMIN_TOKEN")
    }
    data_dir = workdir / "make-run"
    stack = Stack(data_dir, env)
    try:
        took = stack.wait_for("all four services ready", timeout=240)
        print(f"\n[make run] cold start to four ready services: {took:.1f} s")
        for name, port in PORTS.items():
            reply = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
            assert reply.status_code == 200, (name, reply.text)
            assert reply.json()["checks"] == {"database": True, "kafka": True, "draining": False}
        token = (data_dir / "admin-token").read_text().strip()
        assert any(token in line for line in stack.lines), "the operator token is printed"
        admin_properties = data_dir / "kafka" / "admin.properties"
        assert admin_properties.stat().st_mode & 0o777 == 0o600
        assert "sasl.mechanism=SCRAM-SHA-512" in admin_properties.read_text()
        assert any(str(admin_properties) in line for line in stack.lines), "its path is printed"
        assert any("kafka: 127.0.0.1:" in line for line in stack.lines), "the broker is printed"
        operator = {"Authorization": f"Bearer {token}"}
        imported = httpx.post(
            "http://127.0.0.1:8001/v1/admin-units:import",
            json={"source": "vietnam-provinces"},
            headers=operator,
            timeout=60,
        )
        assert imported.status_code == 200, imported.text
        created = httpx.post(
            "http://127.0.0.1:8001/v1/teams",
            json={"code": "E2E-1", "name": "Tổ CNSCĐ e2e", "unit_code": "28261"},
            headers=operator,
            timeout=10,
        )
        assert created.status_code == 201, created.text
        assert any(line.startswith("teams") for line in stack.lines), "prefixed service logs"
    finally:
        family = stack.stop()
    assert stack.proc.returncode == 0
    assert family, "the supervisor had children"
    time.sleep(0.5)
    assert not [pid for pid in family if alive(pid)], "orphan processes after Ctrl-C"

    second = Stack(data_dir, env)
    try:
        second.wait_for("all four services ready", timeout=240)
        team = httpx.get(
            f"http://127.0.0.1:8001/v1/teams/{created.json()['id']}", headers=operator, timeout=5
        )
        assert team.status_code == 200 and team.json()["code"] == "E2E-1"
    finally:
        second.stop()
    assert second.proc.returncode == 0


def test_make_run_is_the_readme_command() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "\t$(PY) -m devstack.run" in makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert os.access(ROOT / ".ci" / "run", os.X_OK)
