"""Child processes that die with their parent and can run as an unprivileged user."""

from __future__ import annotations

import contextlib
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


def _child_setup(user: str | None, on_parent_death: int = signal.SIGTERM) -> Callable[[], None]:
    """Runs in the child between fork and exec.

    A supervisor killed by SIGKILL (or a crash) cannot stop its children, so each child asks the
    kernel for `on_parent_death` when its parent dies: prctl(PR_SET_PDEATHSIG), which also works
    for children that are not ours to modify (postgres, java) and needs no watchdog thread or
    pipe. Two caveats: the "parent" is the thread that forked, so spawn from a thread that
    outlives the child (the main thread here); and a parent that died before the prctl never
    sends it, hence the getppid() check right after.
    """
    parent = os.getpid()

    def setup() -> None:
        os.setpgid(0, 0)  # own process group: Ctrl-C in the terminal reaches only the supervisor
        if user is not None:
            entry = pwd.getpwnam(user)
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
        # After setuid (a credential change clears it): die when the supervisor dies.
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, on_parent_death)
        if os.getppid() != parent:
            os.kill(os.getpid(), on_parent_death)

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
    on_parent_death: int = signal.SIGTERM,
) -> subprocess.Popen[str]:
    """Start `args` in its own process group; it gets `on_parent_death` when this process dies."""
    return subprocess.Popen(
        list(args),
        stdout=log if log is not None else subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=cwd,
        preexec_fn=_child_setup(user, on_parent_death),  # noqa: PLW1509 - setuid, PDEATHSIG
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


def alive(pid: int) -> bool:
    """`pid` exists and is not a zombie (a dead child its new parent has not reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def live_processes(match: Callable[[int], bool]) -> list[int]:
    """Live processes (not this one) for which `match(pid)` holds."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            pid = int(entry.name)
            if match(pid) and alive(pid):
                found.append(pid)
    return found


def stop_pids(pids: Sequence[int], *, sig: int, timeout: float) -> None:
    """Send `sig` to processes that are not our children, wait for them to die (SIGKILL after
    `timeout`)."""
    for last in (sig, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, last)
        deadline = time.monotonic() + (timeout if last == sig else 10)
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not any(alive(pid) for pid in pids):
            return
    raise RuntimeError(f"processes {list(pids)} survive SIGKILL")


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
