"""Replica catch-up: how long activities and scoring take to learn a published registry (not a
test).

    python -m tests.load.bench_replicas_catchup [--scale 1.0] [--services activities,scoring]
        [--together] [--no-units] [--no-publisher] [--sql]

Starts its own PostgreSQL and Kafka (or uses DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS), publishes
the registry of the national load-test fixture to the teams topics as the teams relay would
(CloudEvents headers, key = id, a `traceparent` per import chunk): the admin units (34
provinces, 3,321 communes, ~63,000 villages), 74,422 TeamChanged and 348,362 MemberChanged at
`--scale 1`; `--scale 0.1` keeps a tenth of the teams, their members and their units. Then it
starts each service's runtime in this process (consumers, relay, and for scoring its score
publisher unless `--no-publisher`), one after the other (or both at once with `--together`),
and times how long each replica takes to hold every team and member, from the runtime's start:
until the group has committed every event of the teams topics (polled from the broker), then
the replica's rows are counted once.
Beside the wall time: the CPU time of this process (the services' Python) and of PostgreSQL,
from the start until caught up; `--sql`: the wall time of each SQL statement as well.
"""

# isort: skip_file
# (the support module must be imported first: it sets the import roots)
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from tests.load.bench_scoring_support import infrastructure

import psutil  # after the import roots are set
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from common.kafka import kafka_client_options
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import Table, func, select
from sqlalchemy import event as sql_event

from activities import adapters as activities_adapters
from activities.bootstrap import build_runtime as build_activities
from activities.settings import ActivitiesSettings
from common.contracts.teams import AdminUnitChanged, MemberChanged, TeamChanged, UnitPath
from common.envelope import CloudEventHeaders, EventContract, OutboundEvent, kafka_headers
from common.main import settle_heap
from common.runtime import ServiceRuntime
from common.topics import TEAMS_ADMIN_UNIT, TEAMS_MEMBER, TEAMS_TEAM
from scoring import adapters as scoring_adapters
from scoring.bootstrap import ScoringRuntime
from scoring.settings import ScoringSettings
from teams.units_source import current_units
from tests.load.loadtest.fixture import SCALES, plan

SOURCE = "/cdt/teams"
CHUNK = 2_000  # events per import chunk (one request of the bulk API, one trace)


@dataclass(frozen=True)
class Registry:
    units: list[AdminUnitChanged]
    teams: list[TeamChanged]
    members: list[MemberChanged]


def registry(scale: float, *, units: bool, seed: int = 7) -> Registry:
    """The load test's national fixture as the teams service publishes it after an import."""
    the_plan = plan(SCALES["national"], seed)
    rng = random.Random(seed)
    now = datetime.now(UTC)
    kept = the_plan.teams[: max(1, round(len(the_plan.teams) * scale))]
    commune_of = dict(the_plan.villages)  # village -> commune
    province_of = {
        u["code"]: str(u["parent_code"]) for u in current_units() if u["level"] == "commune"
    }

    def path_of(unit: str) -> UnitPath:
        if unit in commune_of:  # a village
            commune = commune_of[unit]
            return UnitPath(province=province_of[commune], commune=commune, village=unit)
        return UnitPath(province=province_of[unit], commune=unit)

    teams: list[TeamChanged] = []
    members: list[MemberChanged] = []
    n = 0
    for (code, unit), size in zip(kept, the_plan.team_sizes, strict=False):
        team_id = uuid.UUID(int=rng.getrandbits(128))
        teams.append(
            TeamChanged(
                id=team_id,
                code=code,
                name=f"Tổ CNSCĐ {code}",
                unit_code=unit,
                unit_path=path_of(unit),
                status="active",
                established_on=date(2022, 4, 1),
                decision_no=f"{len(teams) + 1}/QĐ-UBND",
                version=1,
                changed_at=now,
            )
        )
        for k in range(size):
            members.append(
                MemberChanged(
                    id=uuid.UUID(int=rng.getrandbits(128)),
                    team_id=team_id,
                    code=the_plan.member_code(n),
                    role="leader" if k == 0 else ("deputy" if k == 1 else "member"),
                    affiliation="resident",
                    joined_on=date(2022, 4, 1),
                    trained=the_plan.trained[n],
                    version=1,
                    changed_at=now,
                )
            )
            n += 1
    unit_events: list[AdminUnitChanged] = []
    if units:
        used = {unit for _, unit in kept}
        communes = sorted({commune_of.get(u, u) for u in used})
        provinces = sorted({province_of[c] for c in communes})
        wanted = set(communes)
        villages = sorted(u for u in commune_of if commune_of[u] in wanted)
        for code in provinces:
            unit_events.append(_unit(code, "province", None, UnitPath(province=code), now))
        for code in communes:
            unit_events.append(_unit(code, "commune", province_of[code], path_of(code), now))
        for code in villages:
            unit_events.append(_unit(code, "village", commune_of[code], path_of(code), now))
    return Registry(units=unit_events, teams=teams, members=members)


def _unit(
    code: str, level: str, parent: str | None, path: UnitPath, now: datetime
) -> AdminUnitChanged:
    return AdminUnitChanged(
        code=code,
        name=f"Đơn vị {code}",
        level=level,  # type: ignore[arg-type]
        parent_code=parent,
        path=path,
        valid_from=date(2025, 7, 1),
        version=1,
        changed_at=now,
    )


def _chunks(contracts: list[EventContract]) -> Iterator[list[EventContract]]:
    for start in range(0, len(contracts), CHUNK):
        yield contracts[start : start + CHUNK]


async def publish(bootstrap: str, reg: Registry) -> float:
    """Units, then teams, then members, in import chunks: one `traceparent` and one set of
    shared `ce_*` headers per chunk, as the relay sends one request's outbox rows."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=20,
        max_batch_size=256 * 1024,
        **kafka_client_options(),
    )
    await producer.start()
    started = time.perf_counter()
    try:
        for contracts in (reg.units, reg.teams, reg.members):
            for chunk in _chunks(list(contracts)):
                trace = {"traceparent": f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"}
                shared: CloudEventHeaders | None = None
                for contract in chunk:
                    event = OutboundEvent.of(contract, source=SOURCE)
                    shared = shared or event.shared_headers()
                    await producer.send(
                        event.topic,
                        key=event.key.encode(),
                        value=json.dumps(event.data, ensure_ascii=False).encode(),
                        headers=kafka_headers({**event.ce_headers(shared), **trace}),
                    )
        await producer.flush()
    finally:
        await producer.stop()
    return time.perf_counter() - started


class CpuMeter:
    """CPU seconds of this process and of PostgreSQL's processes (live and reaped)."""

    def __init__(self) -> None:
        self._start = self._read()

    @staticmethod
    def _read() -> dict[str, float]:
        own = psutil.Process()
        seconds = {"python": time.process_time(), "postgres": 0.0, "kafka": 0.0}
        for child in own.children(recursive=True):
            try:
                name = child.name()
                t = child.cpu_times()
            except psutil.Error:
                continue
            kind = "postgres" if name.startswith("postgres") else "kafka" if "java" in name else ""
            if kind:
                seconds[kind] += t.user + t.system + t.children_user + t.children_system
        return seconds

    def since(self) -> dict[str, float]:
        now = self._read()
        return {k: now[k] - self._start[k] for k in now}


@dataclass(frozen=True)
class Target:
    name: str
    runtime: ServiceRuntime
    teams: Table
    members: Table
    teams_where: object | None = None


async def counts(target: Target) -> tuple[int, int]:
    teams = select(func.count()).select_from(target.teams)
    if target.teams_where is not None:
        teams = teams.where(target.teams_where)  # type: ignore[arg-type]
    async with target.runtime.sessions() as session:
        t = int(await session.scalar(teams) or 0)
        m = int(await session.scalar(select(func.count()).select_from(target.members)) or 0)
    return t, m


class Lag:
    """Events of the teams topics a group has not committed yet, as the broker sees it: polled
    without touching PostgreSQL (counting the replica's rows twice a second took 7 s of
    PostgreSQL's CPU in a national run)."""

    def __init__(self, bootstrap: str) -> None:
        self._admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap, client_id="bench-lag", **kafka_client_options()
        )
        self._offsets = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, client_id="bench-lag", **kafka_client_options()
        )
        self._partitions = [
            TopicPartition(spec.name, p)
            for spec in (TEAMS_TEAM, TEAMS_MEMBER, TEAMS_ADMIN_UNIT)
            for p in range(spec.partitions)
        ]

    async def start(self) -> None:
        await self._admin.start()
        await self._offsets.start()

    async def stop(self) -> None:
        await self._offsets.stop()
        await self._admin.close()

    async def of(self, group: str) -> int:
        ends = await self._offsets.end_offsets(self._partitions)
        committed = await self._admin.list_consumer_group_offsets(group)
        behind = 0
        for tp in self._partitions:
            meta = committed.get(tp)
            behind += ends[tp] - (meta.offset if meta is not None and meta.offset >= 0 else 0)
        return behind


class StatementTimes:
    """Wall time per SQL statement of a runtime's engine (its first 70 characters)."""

    def __init__(self, runtime: ServiceRuntime) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._started: dict[int, float] = {}
        sql_event.listen(runtime.engine.sync_engine, "before_cursor_execute", self._before)
        sql_event.listen(runtime.engine.sync_engine, "after_cursor_execute", self._after)

    def _before(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self._started[id(cursor)] = time.perf_counter()

    def _after(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        key = " ".join(statement.split())[:70]
        self.seconds[key] += time.perf_counter() - self._started.pop(
            id(cursor), time.perf_counter()
        )
        self.calls[key] += 1

    def report(self, top: int = 12) -> str:
        lines = sorted(self.seconds.items(), key=lambda kv: -kv[1])[:top]
        return "\n".join(f"    {s:7.2f} s {self.calls[k]:6,} × {k}" for k, s in lines)


def make_target(name: str, *, publisher: bool) -> Target:
    if name == "activities":
        runtime: ServiceRuntime = build_activities(ActivitiesSettings())
        return Target(
            name,
            runtime,
            activities_adapters.team_replica,
            activities_adapters.member_replica,
        )
    scoring = ScoringRuntime(settings=ScoringSettings())
    if not publisher:
        scoring.publisher.stop()  # its loop then ends at once
    team_state = scoring_adapters.team_state
    return Target(
        name,
        scoring,
        team_state,
        scoring_adapters.member_state,
        teams_where=team_state.c.version >= 0,  # -1: known only through its members so far
    )


async def catch_up(targets: list[Target], reg: Registry, *, sql: bool) -> None:
    want = (len(reg.teams), len(reg.members))
    times: dict[str, StatementTimes] = {}
    for target in targets:
        await target.runtime.migrate()
        if sql:
            times[target.name] = StatementTimes(target.runtime)
    settle_heap()  # as `python -m <service> worker` does
    meter = CpuMeter()
    started = time.perf_counter()
    for target in targets:
        await target.runtime.start(workers=True)
    pending = {t.name: t for t in targets}
    lag = Lag(os.environ["KAFKA_BOOTSTRAP_SERVERS"])
    await lag.start()
    progress: dict[str, int] = {}
    next_report = 15.0
    try:
        while pending:
            await asyncio.sleep(0.25)
            for name, target in list(pending.items()):
                progress[name] = behind = await lag.of(name)
                if behind:
                    continue
                have = await counts(target)  # committed offsets follow the DB commit
                if have[0] < want[0] or have[1] < want[1]:
                    print(f"  {name}: no lag but {have} of {want}", flush=True)
                    continue
                wall = time.perf_counter() - started
                cpu = meter.since()
                del pending[name]
                events = len(reg.units) + want[0] + want[1]
                print(
                    f"{name}: caught up in {wall:.1f} s ({events / wall:,.0f} events/s): "
                    f"{have[0]:,} teams, {have[1]:,} members; CPU since start: "
                    f"this process {cpu['python']:.1f} s, PostgreSQL {cpu['postgres']:.1f} s, "
                    f"Kafka {cpu['kafka']:.1f} s",
                    flush=True,
                )
                if name in times:
                    print(f"  SQL statements of {name} (wall time):", flush=True)
                    print(times[name].report(), flush=True)
            elapsed = time.perf_counter() - started
            if pending and elapsed >= next_report:
                next_report += 15
                status = ", ".join(f"{n} {b:,} events behind" for n, b in progress.items())
                print(f"  {elapsed:.0f} s: {status}", flush=True)
    finally:
        await lag.stop()
        for target in targets:
            await target.runtime.stop()


async def bench(args: argparse.Namespace) -> None:
    built = time.perf_counter()
    reg = registry(args.scale, units=not args.no_units)
    print(
        f"registry: {len(reg.units):,} admin units, {len(reg.teams):,} teams, "
        f"{len(reg.members):,} members (built in {time.perf_counter() - built:.1f} s)",
        flush=True,
    )
    bootstrap = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    seconds = await publish(bootstrap, reg)
    total = len(reg.units) + len(reg.teams) + len(reg.members)
    print(f"published {total:,} events in {seconds:.1f} s", flush=True)
    names = [n.strip() for n in args.services.split(",") if n.strip()]
    if args.together:
        targets = [make_target(n, publisher=not args.no_publisher) for n in names]
        await catch_up(targets, reg, sql=args.sql)
    else:
        for name in names:
            await catch_up([make_target(name, publisher=not args.no_publisher)], reg, sql=args.sql)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="share of the national registry")
    parser.add_argument("--services", default="activities,scoring")
    parser.add_argument("--together", action="store_true", help="start the services at once")
    parser.add_argument("--no-units", action="store_true", help="publish no admin units")
    parser.add_argument(
        "--no-publisher", action="store_true", help="scoring without its score publisher"
    )
    parser.add_argument("--sql", action="store_true", help="print the time of each statement")
    args = parser.parse_args()
    with infrastructure():
        asyncio.run(bench(args))


if __name__ == "__main__":
    main()
