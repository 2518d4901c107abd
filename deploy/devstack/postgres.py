"""A PostgreSQL cluster of our own: `initdb` once into a directory, then start and stop it."""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
from pathlib import Path
from typing import IO

from devstack.procs import (
    chown_tree,
    cmdline,
    free_port,
    live_processes,
    port_open,
    run_as,
    spawn,
    stop_pids,
    stop_process,
    unprivileged_user,
    wait_until,
)

DATABASE = "cdt"
SUPERUSER = "cdt"


def postgres_bindir() -> Path:
    if found := shutil.which("initdb"):
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if not candidates:
        raise RuntimeError(
            "PostgreSQL server binaries not found: install them (`apt-get install postgresql`)"
            " or set DATABASE_URL to an existing server."
        )
    return Path(candidates[0]).parent


class LocalPostgres:
    """`data_dir` holds the cluster, its password and its port (reused by the next start)."""

    def __init__(self, data_dir: Path, *, port: int | None = None) -> None:
        self.data_dir = data_dir.resolve()
        self.bindir = postgres_bindir()
        self.user = unprivileged_user()
        self.cluster = self._cluster_dir()
        self.port = port or self._saved_port() or free_port()
        self.proc: subprocess.Popen[str] | None = None

    @property
    def password(self) -> str:
        return (self.data_dir / "password").read_text().strip()

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"

    def _saved_port(self) -> int | None:
        saved = self.data_dir / "port"
        return int(saved.read_text()) if saved.exists() else None

    def _cluster_dir(self) -> Path:
        """`data_dir/cluster`, or where the unprivileged user can reach when it cannot
        (a clone under a 0700 home or temp directory)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.user is None or _reachable(self.data_dir, self.user):
            return self.data_dir / "cluster"
        digest = hashlib.sha1(str(self.data_dir).encode()).hexdigest()[:16]  # noqa: S324
        return Path("/var/tmp/cdt-postgres") / digest / "cluster"  # noqa: S108 - fixed, root-owned

    def _initdb(self) -> None:
        password = secrets.token_urlsafe(18)
        (self.data_dir / "password").write_text(password)
        parent = self.cluster.parent
        parent.mkdir(parents=True, exist_ok=True)
        parent.chmod(0o755)
        pwfile = parent / "initdb.pw"
        pwfile.write_text(password)
        chown_tree(parent, self.user)
        try:
            run_as(
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(self.cluster),
                    "-U",
                    SUPERUSER,
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                    "--no-sync",
                ],
                user=self.user,
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def destroy(self) -> None:
        """Remove the cluster's files (tests)."""
        self.stop()
        shutil.rmtree(
            self.cluster.parent if self.cluster.parent != self.data_dir else self.cluster,
            ignore_errors=True,
        )

    def start(self, *, log: IO[str] | None = None, timeout: float = 60) -> str:
        """Start (initialising on first use); returns the DATABASE_URL."""
        fresh = not (self.cluster / "PG_VERSION").exists()
        if fresh:
            self._initdb()
        self._stop_leftovers()
        if port_open(self.port):
            raise RuntimeError(f"port {self.port} is taken: is another cluster running?")
        (self.data_dir / "port").write_text(str(self.port))
        self.proc = spawn(
            [
                str(self.bindir / "postgres"),
                "-D",
                str(self.cluster),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={self.cluster}",
                "-c",
                "max_connections=300",
                "-c",
                "shared_buffers=256MB",
                "-c",
                # Per-statement cost for profiling (`tests/load/bench_meter.top_statements`);
                # it costs a hash lookup per statement.
                "shared_preload_libraries=pg_stat_statements,auto_explain",
                "-c",
                # The plan of a statement slower than 3 s goes to postgres.log (as a warning, the
                # level logged here): a plan turned bad by stale statistics shows itself.
                "auto_explain.log_min_duration=3s",
                "-c",
                "auto_explain.log_level=warning",
                "-c",
                "fsync=on",
                "-c",
                "synchronous_commit=on",
                "-c",
                # Full-page images after each checkpoint were most of the WAL that single-event
                # commits waited on (WALWrite) after a bulk load.
                "wal_compression=lz4",
                "-c",
                "log_min_messages=warning",
                "-c",
                # A new 16 MB WAL segment was zero-filled and synced while every committing
                # request waited (WALInitSync): 100-600 ms stalls every ~15 s at 500 single
                # POSTs/s on a fresh cluster. Without it, single-POST p99 went 67-105 → 24-34 ms.
                "wal_init_zero=off",
                "-c",
                # Backends evicting dirty pages during a bulk load ask the kernel to write them
                # at once, instead of leaving hundreds of MB for one writeback burst.
                "backend_flush_after=256kB",
            ],
            log=log,
            user=self.user,
            # Fast shutdown when the supervisor dies: clients are cut off (the default SIGTERM
            # would wait for them), a checkpoint, then exit.
            on_parent_death=signal.SIGINT,
        )
        wait_until(self._accepting, timeout=timeout, what="PostgreSQL", proc=self.proc)
        if fresh:
            self._create_database()
        return self.url

    def _stop_leftovers(self) -> None:
        """Make way after a crash of the previous owner of this cluster (not for clusters in
        use: `make run` holds a lock on its data dir).

        A postmaster of this cluster still alive (its supervisor was killed and it is shutting
        down, or it outlived it) is stopped cleanly (fast shutdown, SIGQUIT then SIGKILL if it
        hangs), and backends left by a killed postmaster are killed. Then the lock files left
        behind are removed: postgres treats them as stale only when their pid is gone, but a
        killed postmaster stays a zombie until init reaps it (seconds, or never in a container
        whose init does not reap), and after a reboot the pid may belong to anyone.
        """
        cluster = str(self.cluster)

        def ours(pid: int) -> bool:
            try:
                return os.readlink(f"/proc/{pid}/cwd") == cluster  # postgres runs in its data dir
            except OSError:
                return False

        if leftovers := live_processes(ours):
            postmasters = [pid for pid in leftovers if _is_postmaster(cmdline(pid), cluster)]
            if postmasters:
                stop_pids(postmasters, sig=signal.SIGINT, timeout=60)
            stop_pids(live_processes(ours), sig=signal.SIGKILL, timeout=10)
        for stale in [self.cluster / "postmaster.pid", *self.cluster.glob(".s.PGSQL.*")]:
            stale.unlink(missing_ok=True)

    def _env(self) -> dict[str, str]:
        return {**os.environ, "PGPASSWORD": self.password}

    def _accepting(self) -> bool:
        done = subprocess.run(
            [str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"],
            check=False,
        )
        return done.returncode == 0

    def _create_database(self) -> None:
        run_as(
            [
                str(self.bindir / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                SUPERUSER,
                DATABASE,
            ],
            user=None,
            env=self._env(),
        )

    def stop(self, *, mode: str = "fast") -> None:
        """`fast` (SIGINT) rolls back and shuts down cleanly; `immediate` (SIGQUIT) crashes."""
        if self.proc is None:
            return
        stop_process(self.proc, sig=signal.SIGQUIT if mode == "immediate" else signal.SIGINT)
        self.proc = None


def _is_postmaster(args: list[str], cluster: str) -> bool:
    return bool(args) and args[0].endswith("/postgres") and cluster in args


def _reachable(path: Path, user: str) -> bool:
    """Can `user` traverse every ancestor of `path`?"""
    entry = pwd.getpwnam(user)
    for ancestor in [path, *path.parents]:
        mode = ancestor.stat()
        if mode.st_uid == entry.pw_uid:
            continue
        if not mode.st_mode & 0o001:
            return False
    return True
