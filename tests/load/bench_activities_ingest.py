"""Benchmark of activities ingest: `python -m tests.load.bench_activities_ingest`.

Starts its own Postgres + Kafka (or uses DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS) and the
activities service (`--api-processes` API processes and a worker process for the relay and the
teams consumer; `--one-process`: all in one), seeds the teams replica through Kafka, then
measures:
1. single-event POST latency at a fixed arrival rate (open model: requests are sent on
   schedule whatever the answers, latency counted from the scheduled time);
2. batch ingest: events/s accepted (HTTP answered) and published (on Kafka, outbox drained);
3. single-event POST latency again, right after that bulk load (`--batches 0` skips 2 and 3).
Each phase also prints the CPU it cost per event or request, by role (API processes, worker,
the rest of the machine: PostgreSQL and Kafka), measured from /proc: on a shared machine whose
speed varies between runs, that figure compares two versions better than events/s.
Targets (issue 4): >= 10,000 events/s batch; p99 < 50 ms at 500 requests/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
# Runnable as `python -m tests.load.bench_activities_ingest` without PYTHONPATH set.
sys.path[:0] = [
    str(ROOT / p) for p in ("libs", "services", "deploy") if str(ROOT / p) not in sys.path
]

import asyncpg  # noqa: E402
import httpx  # noqa: E402
import orjson  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402

from common.contracts.teams import MemberChanged, TeamChanged, UnitPath  # noqa: E402
from common.db import asyncpg_dsn  # noqa: E402
from common.envelope import OutboundEvent, kafka_headers  # noqa: E402
from common.kafka import ensure_topics, kafka_client_options  # noqa: E402
from common.topics import ACTIVITY_RECORDED  # noqa: E402
from devstack.infra import Infra  # noqa: E402
from tests.load.bench_infra import bench_infra  # noqa: E402

ADMIN = "bench-operator-token"
SLOW_SECONDS = 0.05  # the single-POST aim: p99 under 50 ms
TEAMS = 200
MEMBERS_PER_TEAM = 5


class CpuMeter:
    """CPU time by role over a phase, from /proc (Linux): the figure that the host's noise
    does not move, unlike events/s on a shared 2-core machine."""

    def __init__(self, roles: dict[str, list[int]]) -> None:
        self.roles = roles  # role -> pids (service processes)
        self.start = self._read()

    @staticmethod
    def _process_seconds(pid: int) -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _read(self) -> dict[str, float]:
        cpu = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        busy = sum(int(v) for i, v in enumerate(cpu[:8]) if i not in (3, 4))  # not idle/iowait
        seconds = {"machine": busy / os.sysconf("SC_CLK_TCK")}
        for role, pids in self.roles.items():
            seconds[role] = sum(self._process_seconds(pid) for pid in pids)
        seconds["bench"] = time.process_time()
        return seconds

    def per(self, units: float, unit: str) -> str:
        end = self._read()
        used = {role: end[role] - self.start[role] for role in end}
        used["postgres, kafka, other"] = used["machine"] - sum(
            v for role, v in used.items() if role != "machine"
        )
        parts = ", ".join(f"{role} {1000 * v / units:.2f}" for role, v in used.items())
        return f"CPU ms per {unit}: {parts}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def service_env(infra: Infra, port: int, workdir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": infra.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap_servers,
        "CDT_ADMIN_TOKEN": ADMIN,
        "CDT_ENV": "test",
        "ACTIVITIES_PORT": str(port),
        "CDT_TRACES_EXPORTER": "none",
        "CDT_TRACE_SQL": "false",
        "CDT_TRACE_FILE": str(workdir / "traces.jsonl"),
        "CDT_LOG_LEVEL": "WARNING",
        "CDT_RELAY_POLL_SECONDS": "0.05",
        "CDT_RELAY_BATCH_SIZE": "5000",
        "CDT_HOUSEHOLD_HMAC_KEY": "bench-household-secret-0123456789",
        "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("libs", "services", "deploy", ".")),
    }


async def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=base) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError("activities service exited during start-up")
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.3)
    raise RuntimeError("activities service not ready in time")


async def seed_replica(bootstrap: str, dsn: str) -> list[tuple[uuid.UUID, list[uuid.UUID]]]:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, **kafka_client_options()
    )
    await producer.start()
    teams: list[tuple[uuid.UUID, list[uuid.UUID]]] = []
    now = datetime.now(UTC)
    try:
        for n in range(TEAMS):
            team_id = uuid.uuid4()
            contracts: list[TeamChanged | MemberChanged] = [
                TeamChanged(
                    id=team_id, code=f"B-{n}", name=f"Tổ {n}", unit_code=f"82-{n:05d}",
                    unit_path=UnitPath(province="82", commune=f"82-{n % 40:05d}",
                                       village=f"82-{n:05d}"),
                    status="active", established_on=date(2022, 1, 1), version=1, changed_at=now,
                )
            ]  # fmt: skip
            members = [uuid.uuid4() for _ in range(MEMBERS_PER_TEAM)]
            contracts += [
                MemberChanged(
                    id=m, team_id=team_id, role="member", affiliation="resident",
                    joined_on=date(2022, 1, 1), version=1, changed_at=now,
                )
                for m in members
            ]  # fmt: skip
            for contract in contracts:
                event = OutboundEvent.of(contract, source="/cdt/teams")
                await producer.send(
                    contract.TOPIC.name,
                    key=event.key.encode(),
                    value=json.dumps(event.data).encode(),
                    headers=kafka_headers(event.ce_headers()),
                )
            teams.append((team_id, members))
        await producer.flush()
    finally:
        await producer.stop()
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            members = await conn.fetchval("SELECT count(*) FROM activities.member_replica")
            teams_seen = await conn.fetchval("SELECT count(*) FROM activities.team_replica")
            if members >= TEAMS * MEMBERS_PER_TEAM and teams_seen >= TEAMS:
                return teams
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
    raise RuntimeError("replica not seeded in time")


def make_event(teams: Sequence[tuple[uuid.UUID, list[uuid.UUID]]]) -> dict[str, Any]:
    team_id, members = random.choice(teams)
    return {
        "id": str(uuid.uuid4()),
        "team_id": str(team_id),
        "member_id": str(random.choice(members)),
        "occurred_at": (datetime.now(UTC) - timedelta(days=random.randint(0, 300)))
        .astimezone()
        .isoformat(),
        "kind": random.choice(["household_visit", "group_session", "support_desk"]),
        "skills": random.sample(["public_services", "online_payment", "cyber_safety"], 2),
        "citizens_reached": random.randint(1, 5),
        "household_ref": f"HH-{random.randint(1, 10**6)}",
        "audience": ["elderly"],
        "outcomes": {"public_service_accounts": 1, "app_installs": random.randint(0, 1)},
    }


async def topic_end(consumer: AIOKafkaConsumer) -> int:
    """Records on the activity topic so far (sum of its partitions' end offsets)."""
    parts = [TopicPartition(ACTIVITY_RECORDED.name, p) for p in range(ACTIVITY_RECORDED.partitions)]
    ends = await consumer.end_offsets(parts)
    return int(sum(ends.values()))


def batch_bodies(teams: Sequence[Any], *, batches: int, size: int) -> list[bytes]:
    return [
        orjson.dumps({"items": [make_event(teams) for _ in range(size)]}) for _ in range(batches)
    ]


async def bench_batches(
    bases: Sequence[str], key: str, bodies: Sequence[bytes], *, size: int, concurrency: int,
    bootstrap: str,
) -> dict[str, float]:  # fmt: skip
    batches = len(bodies)
    # One client for the whole phase: a new one per poll would cost the publication's timing.
    offsets = AIOKafkaConsumer(bootstrap_servers=bootstrap, **kafka_client_options())
    await offsets.start()
    start_offset = await topic_end(offsets)
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    accepted = 0
    headers = {"authorization": f"Bearer {key}"}

    async def worker(client: RawClient) -> None:
        nonlocal accepted
        while not queue.empty():
            body = queue.get_nowait()
            status, reply = await client.exchange("/v1/activities:batch", body, headers)
            if status != 200:
                raise RuntimeError(f"batch answered {status}: {reply[:300]!r}")
            accepted += orjson.loads(reply)["accepted"]

    # Each client worker posts to one API process (as a load balancer would spread them).
    clients = [RawClient.of(bases[i % len(bases)]) for i in range(concurrency)]
    started = time.perf_counter()
    await asyncio.gather(*(worker(client) for client in clients))
    answered = time.perf_counter() - started
    for client in clients:
        client.close()
    total = batches * size
    try:
        while await topic_end(offsets) - start_offset < total:
            await asyncio.sleep(0.02)
        published = time.perf_counter() - started
    finally:
        await offsets.stop()
    return {
        "events": total,
        "accepted": accepted,
        "accepted_per_s": accepted / answered,
        "published_per_s": total / published,
        "accept_seconds": answered,
        "publish_seconds": published,
    }


class RawClient:
    """A minimal keep-alive HTTP/1.1 client: the load generator must not eat the CPU it tests."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    @classmethod
    def of(cls, base: str) -> RawClient:
        host, _, port = base.removeprefix("http://").partition(":")
        return cls(host, int(port))

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        return (await self.exchange(path, body, headers))[0]

    async def exchange(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """POST; (status, body), status 0 when the connection failed."""
        if self.idle:
            answer = await self._exchange(self.idle.pop(), path, body, headers)
            if answer is not None:
                return answer
            # The server closed this idle keep-alive connection: one fresh attempt.
        conn = await asyncio.open_connection(self.host, self.port)
        answer = await self._exchange(conn, path, body, headers)
        return (0, b"") if answer is None else answer

    async def _exchange(
        self,
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        path: str,
        body: bytes,
        headers: dict[str, str],
    ) -> tuple[int, bytes] | None:
        reader, writer = conn
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        try:
            writer.write(
                f"POST {path} HTTP/1.1\r\nhost: {self.host}\r\ncontent-length: {len(body)}\r\n"
                f"content-type: application/json\r\n{head}\r\n".encode()
                + body
            )
            status_line = await reader.readline()
        except OSError:
            status_line = b""
        if not status_line:
            writer.close()
            return None
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        reply = await reader.readexactly(length)
        self.idle.append(conn)
        return int(status_line.split()[1]), reply

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


async def bench_single(
    ports: Sequence[int], key: str, teams: Sequence[Any], *, rate: int, seconds: float
) -> dict[str, Any]:
    clients = [RawClient("127.0.0.1", port) for port in ports]
    headers = {"authorization": f"Bearer {key}"}
    total = int(rate * seconds)
    bodies = [json.dumps(make_event(teams)).encode() for _ in range(total)]
    latencies: list[float] = []
    slow_by_second: dict[int, int] = {}  # stalls cluster: when they happened tells why
    statuses: dict[int, int] = {}

    async def one(body: bytes, due: float, client: RawClient) -> None:
        try:
            status = await client.post("/v1/activities", body, headers)
        except (OSError, asyncio.IncompleteReadError):
            status = 0  # connection error: counted, not retried
        latencies.append(time.perf_counter() - due)
        if latencies[-1] > SLOW_SECONDS:
            second = int(due - start)
            slow_by_second[second] = slow_by_second.get(second, 0) + 1
        statuses[status] = statuses.get(status, 0) + 1

    tasks = []
    start = time.perf_counter() + 0.1
    for i, body in enumerate(bodies):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(body, due, clients[i % len(clients)])))
    await asyncio.gather(*tasks)
    for client in clients:
        client.close()
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return {
        "requests": total,
        "rate": rate,
        "ok_201": statuses.get(201, 0),
        "other_statuses": sum(v for k, v in statuses.items() if k != 201),
        "statuses": dict(sorted(statuses.items())),
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": latencies[-1] * 1000,
        "slow_by_second": dict(sorted(slow_by_second.items())),
    }


async def run(args: argparse.Namespace, infra: Infra, workdir: Path) -> None:
    await ensure_topics(infra.kafka_bootstrap_servers)
    ports = [free_port() for _ in range(args.api_processes)]
    procs: list[subprocess.Popen[bytes]] = []
    # The deployment shape for load: API processes serve HTTP only (replicas behind a load
    # balancer), a worker process of the same service runs the outbox relay and the teams
    # consumer (--one-process: all in one).
    commands = (
        [("api", "true", ports[0])]
        if args.one_process
        else [("worker", "true", ports[0]), *(("api", "false", port) for port in ports)]
    )
    with (workdir / "service.log").open("w") as svc_log:
        try:
            for mode, workers, port in commands:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "activities", mode],
                        env={**service_env(infra, port, workdir), "CDT_RUN_WORKERS": workers},
                        cwd=ROOT,
                        stdout=svc_log,
                        stderr=subprocess.STDOUT,
                    )
                )
            for port, proc in zip(ports, procs[-len(ports) :], strict=True):
                await wait_ready(f"http://127.0.0.1:{port}", proc)
            roles = {"api": [p.pid for p in procs[-len(ports) :]]}
            if not args.one_process:
                roles["worker"] = [procs[0].pid]
            await measure(args, infra, ports=ports, roles=roles)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()


async def measure(
    args: argparse.Namespace, infra: Infra, *, ports: Sequence[int], roles: dict[str, list[int]]
) -> None:
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    base = bases[0]
    bootstrap = infra.kafka_bootstrap_servers
    teams = await seed_replica(bootstrap, asyncpg_dsn(infra.database_url))
    async with httpx.AsyncClient(base_url=base) as client:
        reply = await client.post(
            "/v1/partners",
            json={"name": "bench", "provinces": ["82"], "rate_limit_per_second": 100_000},
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
        key = reply.json()["api_key"]
    # Warm-up: connections, prepared statements, code paths.
    await bench_batches(
        bases, key, batch_bodies(teams, batches=5 * len(bases), size=1000), size=1000,
        concurrency=2 * len(bases), bootstrap=bootstrap,
    )  # fmt: skip
    await report_single(args, ports, key, teams, roles, phase="before the batch phase")
    if args.batches > 0:
        bodies = batch_bodies(teams, batches=args.batches, size=1000)  # before the meter starts
        meter = CpuMeter(roles)
        await report_batches(args, bases, key, bodies, bootstrap)
        print(meter.per(args.batches, "1,000 events"), flush=True)  # batches of 1,000
        await report_single(args, ports, key, teams, roles, phase="right after the batch phase")


async def report_single(
    args: argparse.Namespace, ports: Sequence[int], key: str, teams: Sequence[Any],
    roles: dict[str, list[int]], *, phase: str,
) -> None:  # fmt: skip
    await asyncio.sleep(2)
    # Warm-up at the measured rate: the API's DB pool grows to the concurrency this rate needs
    # (each new connection prepares its statements once), as it would in production.
    await bench_single(ports, key, teams, rate=args.rate, seconds=3)
    await asyncio.sleep(2)
    meter = CpuMeter(roles)
    single = await bench_single(ports, key, teams, rate=args.rate, seconds=args.seconds)
    cpu = meter.per(single["requests"], "request")
    print(
        f"single POST {phase}, {single['rate']} req/s for {args.seconds:.0f} s (open model, "
        f"{len(ports)} API process(es)): "
        f"{single['requests']} requests, {single['ok_201']} x 201, "
        f"{single['other_statuses']} other {single['statuses']}; "
        f"latency p50 {single['p50_ms']:.1f} ms, "
        f"p90 {single['p90_ms']:.1f} ms, p99 {single['p99_ms']:.1f} ms, "
        f"max {single['max_ms']:.1f} ms; {cpu}",
        flush=True,
    )
    print(f"requests over 50 ms, by second of the run: {single['slow_by_second']}", flush=True)


async def report_batches(
    args: argparse.Namespace, bases: Sequence[str], key: str, bodies: Sequence[bytes],
    bootstrap: str,
) -> None:  # fmt: skip
    batch = await bench_batches(
        bases, key, bodies, size=1000, concurrency=args.concurrency, bootstrap=bootstrap
    )
    print(
        f"batch ingest: {batch['events']:.0f} events in batches of 1000 "
        f"({args.concurrency} concurrent, {len(bases)} API process(es)): "
        f"accepted {batch['accepted_per_s']:,.0f} events/s ({batch['accept_seconds']:.2f} s), "
        f"accepted and published "
        f"{batch['published_per_s']:,.0f} events/s ({batch['publish_seconds']:.2f} s)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--batches", type=int, default=100, help="batches of 1000 events")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--api-processes", type=int, default=1, help="API replicas, each on its own port"
    )
    parser.add_argument("--rate", type=int, default=500, help="single POSTs per second")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--keep", action="store_true", help="keep logs and data")
    parser.add_argument(
        "--one-process", action="store_true", help="API, relay and consumer in one process"
    )
    args = parser.parse_args()
    with bench_infra("cdt-bench-activities-", keep=args.keep) as (infra, workdir):
        asyncio.run(run(args, infra, workdir))


if __name__ == "__main__":
    main()
