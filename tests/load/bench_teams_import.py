"""Benchmark (not a test): a national-size registry through the public bulk API.

    python -m tests.load.bench_teams_import [--villages-per-commune 19] [--single-process]

Starts its own Postgres + Kafka (or uses DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS), runs the teams
service as a real process (`python -m teams`, uvicorn on a free port), then imports over HTTP:
the 34 provinces / 3,321 communes (`{"source": "vietnam-provinces"}`), ~63,000 villages (CSV),
74,422 teams (CSV) and 348,362 members (NDJSON, ~73 % with a training), each as ONE streamed
request. Prints rows/s per phase, the whole import's wall time, the service's peak RSS, and how
long the outbox relay takes to publish every event to Kafka.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
# Runnable as `python -m tests.load.bench_teams_import` without PYTHONPATH set.
sys.path[:0] = [
    str(ROOT / p) for p in ("deploy", "libs", "services") if str(ROOT / p) not in sys.path
]

from tests.load.bench_infra import bench_infra  # noqa: E402
from tests.load.loadtest.fixture import ndjson_body  # noqa: E402

TOKEN = "bench-operator-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TEAMS = 74_422
MEMBERS = 348_362
TRAINED_SHARE = 255_545 / 348_362  # members trained by Sept 2022, per the letter
AFFILIATIONS = (
    "residential_group_leader",
    "area_police",
    "youth_union",
    "enterprise",
    "teacher",
    "health_worker",
    "resident",
    "other",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def communes() -> list[str]:
    from teams.units_source import current_units

    return [u["code"] for u in current_units() if u["level"] == "commune"]


def village_rows(commune_codes: list[str], per_commune: int) -> Iterator[str]:
    yield "code,name,level,parent_code,valid_from\n"
    for commune in commune_codes:
        for i in range(1, per_commune + 1):
            yield f"{commune}-V{i:02d},Thôn {i},village,{commune},2025-07-01\n"


def team_units(commune_codes: list[str], per_commune: int) -> list[str]:
    """Every village and every commune gets a team; the rest go to villages in turn."""
    villages = [f"{c}-V{i:02d}" for c in commune_codes for i in range(1, per_commune + 1)]
    units = villages + commune_codes
    extra = TEAMS - len(units)
    return (units + villages[: max(extra, 0)])[:TEAMS]


def team_rows(units: list[str]) -> Iterator[str]:
    yield "code,name,unit_code,established_on,decision_no\n"
    for n, unit in enumerate(units):
        yield f"T{n:06d},Tổ CNSCĐ {n},{unit},2022-04-01,{n}/QĐ-UBND\n"


def member_rows(team_count: int) -> Iterator[str]:
    base, extra = divmod(MEMBERS, team_count)
    n = 0
    for t in range(team_count):
        for k in range(base + (1 if t < extra else 0)):
            row: dict[str, Any] = {
                "code": f"M{n:07d}",
                "team_code": f"T{t:06d}",
                "full_name": f"Thành viên {n}",
                "role": "leader" if k == 0 else ("deputy" if k == 1 else "member"),
                "affiliation": AFFILIATIONS[n % len(AFFILIATIONS)],
                "phone": f"09{n:08d}",
                "joined_on": "2022-04-01",
            }
            if (n * 7919) % 1000 < TRAINED_SHARE * 1000:
                row["training_course"] = "Kỹ năng số cơ bản"
                row["training_completed_on"] = "2022-09-01"
            if row["affiliation"] == "enterprise":
                row["enterprise_name"] = ("Viettel", "VNPT", "MobiFone")[n % 3]
            yield json.dumps(row, ensure_ascii=False) + "\n"
            n += 1


async def phase(
    client: httpx.AsyncClient,
    name: str,
    path: str,
    *,
    content_type: str,
    lines: Callable[[], Iterator[str]],
) -> tuple[int, float]:
    started = time.perf_counter()
    reply = await client.post(
        path,
        content=ndjson_body(lines()),
        headers={**AUTH, "Content-Type": content_type},
        timeout=httpx.Timeout(900),
    )
    elapsed = time.perf_counter() - started
    reply.raise_for_status()
    report = reply.json()
    rows = int(report["rows"])
    print(
        f"{name:>9}: {rows:>8,} rows in {elapsed:7.1f} s = {rows / elapsed:9,.0f} rows/s "
        f"(created {report['created']:,}, rejected {report['rejected']})",
        flush=True,
    )
    if report["rejected"]:
        print(f"           first errors: {report['errors'][:3]}", flush=True)
    return rows, elapsed


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def wait_ready(client: httpx.AsyncClient, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the teams service exited during start-up")
        try:
            if (await client.get("/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.5)
    raise RuntimeError("the teams service did not become ready")


async def unpublished(database_url: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return int(
            await conn.fetchval("SELECT count(*) FROM teams.outbox WHERE published_at IS NULL")
        )
    finally:
        await conn.close()


async def run(args: argparse.Namespace, env: dict[str, str]) -> None:
    port = free_port()
    env = {**env, "TEAMS_PORT": str(port)}
    log = Path(tempfile.gettempdir()) / f"bench-teams-{port}.log"
    procs: dict[str, subprocess.Popen[bytes]] = {}
    with log.open("wb") as out:
        # The service under test, as deployed: the API process and, unless --single-process,
        # a separate worker process for the outbox relay (CDT_RUN_WORKERS=false on the API).
        api_env = env if args.single_process else {**env, "CDT_RUN_WORKERS": "false"}
        procs["api"] = subprocess.Popen(
            [sys.executable, "-m", "teams", "api"], cwd=ROOT, env=api_env, stdout=out, stderr=out
        )
        if not args.single_process:
            procs["worker"] = subprocess.Popen(
                [sys.executable, "-m", "teams", "worker"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=out,
            )
    proc = procs["api"]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            await wait_ready(client, proc)
            commune_codes = communes()
            units = team_units(commune_codes, args.villages_per_commune)
            total_rows, started = 0, time.perf_counter()

            t0 = time.perf_counter()
            reply = await client.post(
                "/v1/admin-units:import", json={"source": "vietnam-provinces"}, headers=AUTH
            )
            reply.raise_for_status()
            elapsed = time.perf_counter() - t0
            rows = int(reply.json()["rows"])
            total_rows += rows
            print(
                f"{'units':>9}: {rows:>8,} rows in {elapsed:7.1f} s = "
                f"{rows / elapsed:9,.0f} rows/s",
                flush=True,
            )
            for name, path, ctype, lines in (
                (
                    "villages",
                    "/v1/admin-units:import",
                    "text/csv",
                    lambda: village_rows(commune_codes, args.villages_per_commune),
                ),
                ("teams", "/v1/teams:bulk", "text/csv", lambda: team_rows(units)),
                (
                    "members",
                    "/v1/members:bulk",
                    "application/x-ndjson",
                    lambda: member_rows(len(units)),
                ),
            ):
                rows, _ = await phase(client, name, path, content_type=ctype, lines=lines)
                total_rows += rows
            wall = time.perf_counter() - started
            print(
                f"{'total':>9}: {total_rows:>8,} rows in {wall:7.1f} s = "
                f"{total_rows / wall:9,.0f} rows/s",
                flush=True,
            )
            rss = ", ".join(f"{n} {peak_rss_mib(p.pid):,.0f} MiB" for n, p in procs.items())
            client_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"peak RSS: {rss}; bench client {client_rss:,.0f} MiB", flush=True)
            coverage = (await client.get("/v1/admin-units/82/coverage", headers=AUTH)).json()
            print(
                "Đồng Tháp coverage:",
                {
                    k: coverage[k]
                    for k in (
                        "teams",
                        "members",
                        "trained_members",
                        "villages",
                        "villages_with_team",
                        "villages_without_team",
                    )
                },
                flush=True,
            )

            relay_started = time.perf_counter()
            pending = await unpublished(env["DATABASE_URL"])
            print(f"outbox rows still to publish when the import ended: {pending:,}", flush=True)
            while pending and time.perf_counter() - relay_started < args.relay_wait:
                await asyncio.sleep(2)
                pending = await unpublished(env["DATABASE_URL"])
            print(
                f"relay drained the outbox {time.perf_counter() - relay_started:.1f} s after "
                f"the import ({pending:,} left)",
                flush=True,
            )
    finally:
        for each in procs.values():
            each.terminate()
        for each in procs.values():
            try:
                each.wait(timeout=30)
            except subprocess.TimeoutExpired:
                each.kill()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.load.bench_teams_import")
    parser.add_argument("--villages-per-commune", type=int, default=19)  # 3,321 x 19 = 63,099
    parser.add_argument("--relay-wait", type=float, default=300.0)
    parser.add_argument(
        "--single-process", action="store_true", help="relay inside the API process"
    )
    args = parser.parse_args()

    from common.kafka import ensure_topics

    with bench_infra("cdt-bench-teams-", kafka_heap="512m") as (infra, _):
        asyncio.run(ensure_topics(infra.kafka_bootstrap_servers))
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("libs", "services", ".")),
            "DATABASE_URL": infra.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap_servers,
            "CDT_ADMIN_TOKEN": TOKEN,
            "CDT_ENV": "test",
            "CDT_TRACES_EXPORTER": "none",
            "CDT_LOG_LEVEL": "WARNING",
            # One streamed request per phase: lift the 2 MB default body limit (see report).
            "CDT_MAX_BODY_BYTES": str(1_000_000_000),
        }
        asyncio.run(run(args, env))


if __name__ == "__main__":
    main()
