"""The real services as separate processes on a Postgres and a Kafka of their own.

Fault tests kill, restart and starve these processes, so they get their own infrastructure: the
session's broker and database stay untouched, and no other test's data shows up in the
invariant. Layout (one process each, spawned like `make run` does, with PDEATHSIG):

- `teams`: API + relay + partner consumer
- `activities`: API only; `activities-worker`: relay + teams-replica consumer
- `scoring`: API only; `scoring-worker`: consumer + score publisher + relay
- `notifications`: API + consumers + webhook delivery worker
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from common.contracts.activities import SKILLS
from common.kafka import kafka_client_options
from common.kafka_access import service_client_env
from common.topics import CONSUMER_GROUPS
from devstack.kafka import LocalKafka
from devstack.postgres import LocalPostgres
from devstack.procs import free_port, spawn
from tests.helpers import OPERATOR, eventually

ROOT = Path(__file__).resolve().parents[2]
HMAC_KEY = "fault-tests-household-key-0123456789"
PROVINCE = "82"
COMMUNES = ("82001", "82002")
KINDS = ("household_visit", "group_session", "support_desk")
LOAD_OUTCOMES = ("app_installs", "vneid_activations", "online_applications")

# label -> (python -m <module>, mode, API port env var or None)
PROCESSES: dict[str, tuple[str, str, str | None]] = {
    "teams": ("teams", "api", "TEAMS_PORT"),
    "activities": ("activities", "api", "ACTIVITIES_PORT"),
    "activities-worker": ("activities", "worker", None),
    "scoring": ("scoring", "api", "SCORING_PORT"),
    "scoring-worker": ("scoring", "worker", None),
    "notifications": ("notifications", "api", "NOTIFICATIONS_PORT"),
}
# API processes that run no background work: a separate worker process does it.
API_ONLY = {"activities", "scoring"}


class ServiceProcess:
    def __init__(self, label: str, *, env: dict[str, str], log: Path, port: int | None) -> None:
        self.label = label
        default = (label.partition("#")[0], "worker", None)  # extra workers: "scoring#1"
        self.module, self.mode, _ = PROCESSES.get(label, default)
        self.env = env
        self.log = log
        self.port = port
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        assert self.port is not None
        return f"http://127.0.0.1:{self.port}"

    def start(self, **extra_env: str) -> None:
        assert self.proc is None or self.proc.poll() is not None, f"{self.label} is running"
        with self.log.open("a") as out:
            out.write(f"\n===== start {self.label} {extra_env} at {time.time():.1f}\n")
            out.flush()
            self.proc = spawn(
                [sys.executable, "-m", self.module, self.mode],
                env={**self.env, **extra_env},
                cwd=ROOT,
                log=out,
            )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """`kill -9`: no drain, no offset commit, no cleanup."""
        assert self.proc is not None and self.alive, f"{self.label} is not running"
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 40) -> int:
        """SIGTERM: the graceful drain; returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                raise AssertionError(f"{self.label} did not drain within {timeout} s") from None
        return self.proc.returncode

    async def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return await asyncio.to_thread(self.proc.wait, timeout)

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


@dataclass
class Team:
    id: str
    code: str
    commune: str
    members: list[str] = field(default_factory=list)


@dataclass
class World:
    teams: list[Team]
    partner_key: str

    @property
    def partner(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.partner_key}"}


class Stack:
    """Postgres, Kafka and the four services; methods to break and restore each of them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.postgres = LocalPostgres(root / "postgres")
        self.kafka = LocalKafka(root / "kafka", heap="512m")
        self.database_url = ""
        self.bootstrap = ""
        self.env: dict[str, str] = {}
        # Each service logs in as its own principal (`common.kafka_access`), as in `make run`.
        self.kafka_passwords: dict[str, str] = {}
        self.procs: dict[str, ServiceProcess] = {}
        self.engine: AsyncEngine | None = None
        self.world: World | None = None
        self._extra = 0

    # ---------------------------------------------------------------- infrastructure

    def start_infra(self) -> None:
        pg_log = (self.root / "postgres.log").open("a")
        kafka_log = (self.root / "kafka.log").open("a")
        self.database_url = self.postgres.start(log=pg_log)
        self.bootstrap = self.kafka.start(log=kafka_log)
        self._logs = (pg_log, kafka_log)

    def restart_postgres_immediate(self) -> None:
        self.postgres.stop(mode="immediate")

    def start_postgres(self) -> None:
        self.postgres.start(log=self._logs[0])

    def stop_kafka(self) -> None:
        self.kafka.stop()

    def start_kafka(self) -> None:
        self.kafka.start(log=self._logs[1])

    def stop_infra(self) -> None:
        self.kafka.stop()
        self.postgres.stop()
        for log in getattr(self, "_logs", ()):
            log.close()

    # ---------------------------------------------------------------- services

    def build_env(self) -> dict[str, str]:
        ports = {name: free_port() for name in ("teams", "activities", "scoring", "notifications")}
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("libs", "services", "deploy")),
            "PYTHONUNBUFFERED": "1",
            "DATABASE_URL": self.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "CDT_ADMIN_TOKEN": OPERATOR["Authorization"].split()[1],
            "CDT_ENV": "test",
            "CDT_TRACES_EXPORTER": "none",
            "CDT_TRACE_SQL": "false",
            "CDT_LOG_LEVEL": "INFO",
            "CDT_RELAY_POLL_SECONDS": "0.2",
            "CDT_LAG_INTERVAL_SECONDS": "1",
            # The broker's minimum: a killed consumer's partitions move after 6 s, not 10.
            "CDT_CONSUMER_SESSION_TIMEOUT_MS": "6000",
            # A fixed key: payload hashes (duplicate vs conflict) survive process restarts.
            "CDT_HOUSEHOLD_HMAC_KEY": HMAC_KEY,
            "CDT_PARTNER_RATE_LIMIT": "1000",
            "CDT_WEBHOOK_ALLOW_PRIVATE": "true",
            "CDT_WEBHOOK_TIMEOUT_SECONDS": "3",  # lease = 5 s
            "CDT_WEBHOOK_BACKOFF_BASE_SECONDS": "0.2",
            "CDT_WEBHOOK_BACKOFF_MAX_SECONDS": "1",
            "CDT_WEBHOOK_POLL_SECONDS": "0.1",
            "TEAMS_PORT": str(ports["teams"]),
            "ACTIVITIES_PORT": str(ports["activities"]),
            "SCORING_PORT": str(ports["scoring"]),
            "NOTIFICATIONS_PORT": str(ports["notifications"]),
        }
        for key in ("CDT_FAULT_POINTS", "CDT_INFRA"):
            self.env.pop(key, None)
        for label, (module, _, port_var) in PROCESSES.items():
            env = self.env_of(module)
            if label in API_ONLY:
                env["CDT_RUN_WORKERS"] = "false"
            port = int(self.env[port_var]) if port_var else None
            self.procs[label] = ServiceProcess(
                label, env=env, log=self.root / f"{label}.log", port=port
            )
        return self.env

    def env_of(self, module: str) -> dict[str, str]:
        """The environment of a process of `module`, with that service's Kafka principal."""
        principal = {}
        if password := self.kafka_passwords.get(module):
            principal = {**service_client_env(module, password), "CDT_CREATE_TOPICS": "false"}
        return {**self.env, **principal}

    def __getitem__(self, label: str) -> ServiceProcess:
        return self.procs[label]

    def url(self, service: str) -> str:
        return self.procs[service].url

    def extra_worker(self, module: str) -> ServiceProcess:
        """Another `python -m <module> worker` process (e.g. a second scoring consumer)."""
        self._extra += 1
        label = f"{module}#{self._extra}"
        env = self.env_of(module)
        proc = ServiceProcess(label, env=env, log=self.root / f"{label}.log", port=None)
        self.procs[label] = proc
        return proc

    async def wait_ready(self, *labels: str, timeout: float = 90) -> None:
        async with httpx.AsyncClient(timeout=3) as http:
            for label in labels:
                proc = self.procs[label]

                async def ready(proc: ServiceProcess = proc) -> bool:
                    assert proc.alive, f"{proc.label} exited:\n{proc.tail()}"
                    try:
                        reply = await http.get(f"{proc.url}/readyz")
                    except httpx.HTTPError:
                        return False
                    return reply.status_code == 200

                await eventually(ready, timeout=timeout, interval=0.3, what=f"{label} ready")

    async def restart(self, label: str, **extra_env: str) -> None:
        proc = self.procs[label]
        if proc.alive:
            await asyncio.to_thread(proc.terminate)
        proc.start(**extra_env)
        if proc.port is not None:
            await self.wait_ready(label)

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs.values())):
            if proc.alive:
                with contextlib.suppress(AssertionError):
                    proc.terminate(timeout=30)

    # ---------------------------------------------------------------- database and Kafka

    def db(self) -> AsyncEngine:
        if self.engine is None:
            self.engine = create_async_engine(
                self.database_url, pool_pre_ping=True, connect_args={"timeout": 5}
            )
        return self.engine

    async def scalar(self, sql: str, **params: Any) -> Any:
        async with self.db().connect() as conn:
            return await conn.scalar(text(sql), params)

    async def rows(self, sql: str, **params: Any) -> list[Any]:
        async with self.db().connect() as conn:
            return list((await conn.execute(text(sql), params)).mappings().all())

    async def execute(self, sql: str, **params: Any) -> None:
        async with self.db().begin() as conn:
            await conn.execute(text(sql), params)

    async def outbox_backlog(self, schema: str) -> int:
        return int(
            await self.scalar(f"SELECT count(*) FROM {schema}.outbox WHERE published_at IS NULL")
        )

    async def score_changelog_backlog(self) -> int:
        """Score versions written and not sent yet (scoring publishes them from its history)."""
        return int(
            await self.scalar(
                "SELECT count(*) FROM scoring.score_history"
                " WHERE seq > (SELECT published_seq FROM scoring.score_changelog)"
            )
        )

    async def lag(self, group: str, topics: Iterable[str] | None = None) -> dict[str, int]:
        """End offset − committed offset per topic, summed over partitions (from the broker)."""
        names = list(topics or (t.name for t in CONSUMER_GROUPS[group]))
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, **kafka_client_options())
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, **kafka_client_options()
        )
        await admin.start()
        await consumer.start()
        try:
            committed = await admin.list_consumer_group_offsets(group)
            partitions = [
                TopicPartition(described["topic"], part["partition"])
                for described in await admin.describe_topics(names)
                for part in described["partitions"]
            ]
            assert {tp.topic for tp in partitions} == set(names), "topic metadata missing"
            ends = await consumer.end_offsets(partitions)
            lag: dict[str, int] = dict.fromkeys(names, 0)
            for tp, end in ends.items():
                meta = committed.get(tp)
                done = meta.offset if meta is not None and meta.offset >= 0 else 0
                lag[tp.topic] += max(end - done, 0)
            return lag
        finally:
            await consumer.stop()
            await admin.close()

    async def positions(self, topic: str) -> dict[int, int]:
        """End offset of each partition of a topic."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, **kafka_client_options())
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, **kafka_client_options()
        )
        await admin.start()
        await consumer.start()
        try:
            [described] = await admin.describe_topics([topic])
            parts = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
            return {tp.partition: end for tp, end in (await consumer.end_offsets(parts)).items()}
        finally:
            await consumer.stop()
            await admin.close()

    async def end_offsets(self, topic: str) -> int:
        """How many records a topic has ever had (sum of its partitions' end offsets)."""
        return sum((await self.positions(topic)).values())

    async def group_members(self, group: str) -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, **kafka_client_options())
        await admin.start()
        try:
            [response] = await admin.describe_consumer_groups([group])
            [described] = response.to_object()["groups"]
            return len(described["members"])
        finally:
            await admin.close()

    async def wait_drained(self, *, timeout: float = 60) -> None:
        """Every outbox published and every consumer group caught up (lag 0 everywhere)."""
        deadline = time.monotonic() + timeout
        while True:
            pending: dict[str, object] = {}
            for schema in ("teams", "activities", "scoring", "notifications"):
                if backlog := await self.outbox_backlog(schema):
                    pending[f"{schema} outbox"] = backlog
            if backlog := await self.score_changelog_backlog():
                pending["scoring changelog"] = backlog
            for group in CONSUMER_GROUPS:
                if lag := {t: n for t, n in (await self.lag(group)).items() if n}:
                    pending[f"{group} lag"] = lag
            if not pending:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"not drained after {timeout} s: {pending}")
            await asyncio.sleep(0.5)

    # ---------------------------------------------------------------- the world

    async def seed(self, *, teams_per_commune: int = 2, members_per_team: int = 2) -> World:
        """One province, two communes, a few teams with members, one partner key."""
        async with httpx.AsyncClient(timeout=30, headers=OPERATOR) as http:
            teams_url = self.url("teams")

            async def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
                reply = await http.post(url, json=body)
                assert reply.status_code == 201, (url, reply.status_code, reply.text)
                return reply.json()  # type: ignore[no-any-return]

            await post(
                f"{teams_url}/v1/admin-units",
                {"code": PROVINCE, "name": "Đồng Tháp", "level": "province"},
            )
            for i, commune in enumerate(COMMUNES):
                await post(
                    f"{teams_url}/v1/admin-units",
                    {
                        "code": commune,
                        "name": f"Xã thử {i + 1}",
                        "level": "commune",
                        "parent_code": PROVINCE,
                    },
                )
            teams: list[Team] = []
            for commune in COMMUNES:
                for n in range(teams_per_commune):
                    code = f"F-{commune}-{n}"
                    created = await post(
                        f"{teams_url}/v1/teams",
                        {
                            "code": code,
                            "name": f"Tổ CNSCĐ {code}",
                            "unit_code": commune,
                            "established_on": "2024-01-01",
                        },
                    )
                    team = Team(id=created["id"], code=code, commune=commune)
                    for m in range(members_per_team):
                        member = await post(
                            f"{teams_url}/v1/teams/{team.id}/members",
                            {
                                "full_name": f"Thành viên {m}",
                                "role": "leader" if m == 0 else "member",
                                "affiliation": "youth_union",
                                "joined_on": "2024-01-01",
                            },
                        )
                        team.members.append(member["id"])
                    teams.append(team)
            partner = await post(
                f"{self.url('activities')}/v1/partners",
                {"name": "fault-test app", "provinces": [PROVINCE]},
            )
        self.world = World(teams=teams, partner_key=partner["api_key"])
        members = sum(len(t.members) for t in teams)

        async def replicated() -> bool:
            known = await self.scalar("SELECT count(*) FROM activities.member_replica")
            return bool(known == members)

        await eventually(replicated, timeout=60, what="the activities replica")
        await self.wait_drained()
        return self.world


# -------------------------------------------------------------------- the partner app


class Load:
    """A partner app posting activity batches; it retries every unanswered or 5xx batch with
    the same ids (and payloads) until each item has an answer, as the README asks partners to."""

    def __init__(self, stack: Stack, *, seed: int = 0) -> None:
        assert stack.world is not None
        self.stack = stack
        self.world = stack.world
        self.rng = random.Random(seed)
        self.items: dict[str, dict[str, Any]] = {}
        self.statuses: dict[str, list[str]] = {}
        self.failures: list[str] = []  # transport errors and 5xx seen (and retried)
        self.slowest = 0.0

    def item(self, **overrides: Any) -> dict[str, Any]:
        team = self.rng.choice(self.world.teams)
        kind = self.rng.choice(KINDS)
        # Spread over ~40 days (two or three months), never in the future.
        occurred = datetime.now(UTC) - timedelta(minutes=self.rng.randint(10, 40 * 24 * 60))
        body: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "team_id": team.id,
            "member_id": self.rng.choice(team.members),
            "occurred_at": occurred.isoformat(),
            "kind": kind,
            "skills": self.rng.sample(list(SKILLS), self.rng.randint(1, 3)),
            "citizens_reached": self.rng.randint(1, 6),
            "household_ref": f"hh-{self.rng.randint(1, 60)}",
            "outcomes": {name: self.rng.randint(0, 2) for name in LOAD_OUTCOMES},
        }
        body.update(overrides)
        return body

    def batch(self, size: int) -> list[dict[str, Any]]:
        return [self.item() for _ in range(size)]

    async def post(
        self,
        http: httpx.AsyncClient,
        items: list[dict[str, Any]],
        *,
        deadline: float = 120,
        request_timeout: float = 10,
    ) -> None:
        """Post until every item is accepted or a duplicate; anything else fails the test."""
        for item in items:
            self.items.setdefault(item["id"], item)
        pending = list(items)
        url = f"{self.stack.url('activities')}/v1/activities:batch"
        give_up = time.monotonic() + deadline
        while pending:
            assert time.monotonic() < give_up, f"{len(pending)} items never answered"
            started = time.monotonic()
            try:
                reply = await http.post(
                    url,
                    json={"items": pending},
                    headers=self.world.partner,
                    timeout=request_timeout,
                )
            except httpx.HTTPError as exc:
                self.failures.append(type(exc).__name__)
                await asyncio.sleep(0.3)
                continue
            finally:
                self.slowest = max(self.slowest, time.monotonic() - started)
            if reply.status_code in (429, 502, 503, 504):
                self.failures.append(str(reply.status_code))
                await asyncio.sleep(0.3)
                continue
            assert reply.status_code == 200, (reply.status_code, reply.text)
            retry = []
            for sent, result in zip(pending, reply.json()["items"], strict=True):
                assert result["id"] == sent["id"]
                if result["status"] in ("accepted", "duplicate"):
                    self.statuses.setdefault(sent["id"], []).append(result["status"])
                elif result.get("retryable"):
                    retry.append(sent)
                else:
                    raise AssertionError(f"rejected: {result}")
            pending = retry
            if pending:
                await asyncio.sleep(0.5)

    async def run(
        self,
        *,
        batches: int,
        size: int,
        pause: float = 0.05,
        concurrency: int = 2,
        stop: asyncio.Event | None = None,
    ) -> None:
        """`batches` batches from `concurrency` clients (or until `stop` is set)."""
        queue = iter(range(batches))

        async def client() -> None:
            async with httpx.AsyncClient() as http:
                for _ in queue:
                    if stop is not None and stop.is_set():
                        return
                    await self.post(http, self.batch(size))
                    await asyncio.sleep(pause)

        await asyncio.gather(*(client() for _ in range(concurrency)))

    @property
    def answered(self) -> set[str]:
        return set(self.statuses)

    def accepted_once(self) -> None:
        """Each id was `accepted` exactly once; every other answer for it was `duplicate`."""
        twice = [i for i, s in self.statuses.items() if s.count("accepted") > 1]
        assert not twice, f"{len(twice)} ids accepted twice"
