"""Throwaway PostgreSQL and Kafka for one benchmark run, in a temp dir removed afterwards.

Every benchmark starts its own servers (or uses `DATABASE_URL` / `KAFKA_BOOTSTRAP_SERVERS` when
set); a national-scale run leaves gigabytes of data behind, so the directory goes with the run
unless `keep` is asked for (logs to read).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# `python -m tests.load.bench_*` from the repository root: the same import roots as pytest.
ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [
    str(ROOT / p) for p in ("libs", "services", "deploy") if str(ROOT / p) not in sys.path
]

from devstack.infra import Infra, provide  # noqa: E402


@contextmanager
def bench_infra(
    prefix: str, *, kafka_heap: str = "1g", keep: bool = False
) -> Iterator[tuple[Infra, Path]]:
    """(infra, workdir): the servers, and a directory for the run's own logs."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    workdir.chmod(0o755)  # PostgreSQL runs as an unprivileged user and must reach its data
    try:
        with (
            (workdir / "postgres.log").open("w") as postgres_log,
            (workdir / "kafka.log").open("w") as kafka_log,
        ):
            infra = provide(
                workdir / "infra",
                postgres_log=postgres_log,
                kafka_log=kafka_log,
                kafka_heap=kafka_heap,
            )
            os.environ.update(infra.kafka_env)  # the bench's own clients: the superuser
            try:
                yield infra, workdir
            finally:
                infra.stop()
    finally:
        if keep:
            print(f"logs and data kept in {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
