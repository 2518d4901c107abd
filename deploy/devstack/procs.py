"""Child processes that die with their parent and can run as an unprivileged user."""

from __future__ import annotations

import ctypes
import os
import pwd
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _child_setup(user: str | None) -> Callable[[], None]:
    def setup() -> None:
        os.setpgid(0, 0)  # own process group: Ctrl-C in the terminal reaches only the supervisor
        if user is not None:
            entry = pwd.getpwnam(user)
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
        # After setuid (a credential change clears it): die when the supervisor dies.
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    return setup


def unprivileged_user() -> str | None:
    """PostgreSQL refuses to run as root; as root we run it as `postgres` (or `nobody`)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root and no unprivileged user to run PostgreSQL as")


def chown_tree(path: Path, user: str | None) -> None:
    if user is None:
        return
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def spawn(
    args: Sequence[str],
    *,
    log: IO[str] | None = None,
    user: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        list(args),
        stdout=log if log is not None else subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=cwd,
        preexec_fn=_child_setup(user),  # noqa: PLW1509 - needs setuid and PDEATHSIG
    )


def run_as(args: Sequence[str], *, user: str | None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        list(args),
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=_child_setup(user),
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr or done.stdout}")
    return done.stdout


def stop_process(
    proc: subprocess.Popen[str], *, sig: int = signal.SIGTERM, timeout: float = 30
) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def wait_until(
    check: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    proc: subprocess.Popen[str] | None = None,
    interval: float = 0.2,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}")
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s")


def pump_lines(stream: IO[str], prefix: str, sink: Callable[[str], None]) -> threading.Thread:
    def pump() -> None:
        for line in stream:
            sink(f"{prefix} {line.rstrip()}")

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread
