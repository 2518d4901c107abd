"""The national fixture, loaded through the public bulk APIs, deterministic from a seed.

National scale: the current 34 provinces / 3,321 communes (`vietnam-provinces`), about 63,000
villages (13 to 25 per commune), 74,422 teams (one in every village and commune, the rest in
villages) and 348,362 members (4 to 9 per team, ~73 % trained). Smoke scale: the same shape in
the two smallest provinces, a few villages per commune.

Reuse: a marker under `<data-dir>/loadtest/` records what was loaded (scale, seed, a
fingerprint of the rows) and a roster file maps team ids to members (read once from the public
compacted topics `teams.team.v1` / `teams.member.v1`). A later run checks a sample against the
teams API and skips the import; any doubt and the (idempotent) import runs again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from common.kafka import kafka_client_options
from common.topics import TEAMS_MEMBER, TEAMS_TEAM
from tests.load.loadtest.generator import TeamRef
from tests.load.loadtest.watch import partition_map

AFFILIATIONS = (
    ("residential_group_leader", 18),
    ("area_police", 12),
    ("youth_union", 20),
    ("enterprise", 6),
    ("teacher", 10),
    ("health_worker", 8),
    ("resident", 22),
    ("other", 4),
)
TRAINED_SHARE = 255_545 / 348_362  # members trained by Sept 2022 (Letter 2251/BTTTT-CĐSQG)
CHUNK_ROWS = 2_000


@dataclass(frozen=True)
class Scale:
    name: str
    provinces: int | None  # None = all 34
    villages_per_commune: tuple[int, int]
    teams: int | None  # None = one per village and commune
    members: int | None  # None = 4.68 per team on average (the national ratio)
    code_prefix: str


SCALES = {
    "national": Scale("national", None, (13, 25), 74_422, 348_362, "LT"),
    "smoke": Scale("smoke", 2, (2, 4), None, None, "LS"),
}


@dataclass
class Plan:
    """Every row of the fixture, derived from (scale, seed) alone."""

    scale: Scale
    seed: int
    provinces: list[str]
    villages: list[tuple[str, str]]  # (code, commune)
    teams: list[tuple[str, str]]  # (code, unit code)
    team_sizes: list[int]
    trained: list[bool]

    @property
    def members(self) -> int:
        return sum(self.team_sizes)

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for line in [*self.village_rows(), *self.team_rows(), *self.member_rows()]:
            digest.update(line.encode())
        return digest.hexdigest()[:16]

    def village_rows(self) -> Iterator[str]:
        yield "code,name,level,parent_code,valid_from\n"
        for code, commune in self.villages:
            yield f"{code},Thôn {code.rsplit('-V', 1)[1]},village,{commune},2025-07-01\n"

    def team_rows(self) -> Iterator[str]:
        yield "code,name,unit_code,established_on,decision_no\n"
        for n, (code, unit) in enumerate(self.teams):
            yield f"{code},Tổ CNSCĐ {code},{unit},2022-04-01,{n + 1}/QĐ-UBND\n"

    def member_code(self, n: int) -> str:
        return f"{self.scale.code_prefix}M{n:07d}"

    def member_rows(self) -> Iterator[str]:
        r = random.Random(self.seed * 7 + 1)
        names, weights = zip(*AFFILIATIONS, strict=True)
        n = 0
        for (team_code, _unit), size in zip(self.teams, self.team_sizes, strict=True):
            for k in range(size):
                affiliation = r.choices(names, weights)[0]
                row: dict[str, Any] = {
                    "code": self.member_code(n),
                    "team_code": team_code,
                    "full_name": f"Thành viên {n}",
                    "role": "leader" if k == 0 else ("deputy" if k == 1 else "member"),
                    "affiliation": affiliation,
                    "phone": f"09{n:08d}",
                    "joined_on": "2022-04-01",
                }
                if self.trained[n]:
                    row["training_course"] = "Kỹ năng số cơ bản"
                    row["training_completed_on"] = "2022-09-01"
                if affiliation == "enterprise":
                    row["enterprise_name"] = ("Viettel", "VNPT", "MobiFone")[n % 3]
                yield json.dumps(row, ensure_ascii=False) + "\n"
                n += 1


def plan(scale: Scale, seed: int) -> Plan:
    from teams.units_source import current_units

    units = current_units()
    provinces = sorted(u["code"] for u in units if u["level"] == "province")
    communes_of: dict[str, list[str]] = {p: [] for p in provinces}
    for unit in units:
        if unit["level"] == "commune":
            communes_of[unit["parent_code"]].append(unit["code"])
    if scale.provinces is not None:  # the smallest provinces: a quick but real hierarchy
        provinces = sorted(
            sorted(provinces, key=lambda p: (len(communes_of[p]), p))[: scale.provinces]
        )
    r = random.Random(seed)
    villages: list[tuple[str, str]] = []
    communes: list[str] = []
    for province in provinces:
        for commune in sorted(communes_of[province]):
            communes.append(commune)
            for i in range(1, r.randint(*scale.villages_per_commune) + 1):
                villages.append((f"{commune}-V{i:02d}", commune))
    units_for_teams = [v for v, _ in villages] + communes
    wanted = scale.teams or len(units_for_teams)
    if wanted > len(units_for_teams):  # larger villages get a second team
        units_for_teams += r.choices([v for v, _ in villages], k=wanted - len(units_for_teams))
    units_for_teams = units_for_teams[:wanted]
    teams = [(f"{scale.code_prefix}{n:06d}", unit) for n, unit in enumerate(units_for_teams)]
    sizes = team_sizes(r, len(teams), scale.members)
    trained = [r.random() < TRAINED_SHARE for _ in range(sum(sizes))]
    return Plan(scale, seed, provinces, villages, teams, sizes, trained)


def team_sizes(r: random.Random, teams: int, members: int | None) -> list[int]:
    """4 to 9 members a team, `members` in all (default: the national 4.68 a team)."""
    wanted = members or round(teams * 348_362 / 74_422)
    sizes = [4] * teams
    extra = wanted - 4 * teams
    while extra > 0:
        t = r.randrange(teams)
        if sizes[t] < 9:
            sizes[t] += 1
            extra -= 1
    return sizes


async def ndjson_body(lines: Iterator[str]) -> AsyncIterator[bytes]:
    """NDJSON lines streamed as a request body, in chunks of `CHUNK_ROWS` rows."""
    chunk: list[str] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) >= CHUNK_ROWS:
            yield "".join(chunk).encode()
            chunk = []
            await asyncio.sleep(0)
    if chunk:
        yield "".join(chunk).encode()


async def bulk_upload(
    client: httpx.AsyncClient,
    path: str,
    content_type: str,
    lines: Callable[[], Iterator[str]],
    say: Callable[[str], None],
    what: str,
) -> dict[str, Any]:
    """One streamed upload to a bulk endpoint of the teams service; any rejected row fails it
    (the rows are ours: a rejection is a bug in the fixture, not data to skip)."""
    started = time.perf_counter()
    reply = await client.post(
        path,
        content=ndjson_body(lines()),
        headers={"Content-Type": content_type},
        timeout=httpx.Timeout(1800),
    )
    reply.raise_for_status()
    report: dict[str, Any] = reply.json()
    elapsed = time.perf_counter() - started
    say(
        f"{what}: {report['rows']:,} rows in {elapsed:.1f} s "
        f"({report['rows'] / max(elapsed, 1e-9):,.0f} rows/s; created {report['created']:,}, "
        f"updated {report.get('updated', 0):,}, rejected {report['rejected']})"
    )
    if report["rejected"]:
        raise RuntimeError(f"{what}: rows rejected: {report['errors'][:3]}")
    return {
        "rows": report["rows"],
        "seconds": round(elapsed, 1),
        "created": report["created"],
        "updated": report.get("updated", 0),
    }


async def read_roster(
    bootstrap: str,
    prefix: str,
    *,
    expect: tuple[int, int] | None = None,
    say: Callable[[str], None] | None = None,
    timeout: float = 1800,
) -> dict[str, TeamRef]:
    """Teams (with province) and their members from the compacted teams topics; with `expect`
    (teams, members), keeps reading as the teams relay publishes until both counts are there."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        **kafka_client_options(),
    )
    await consumer.start()
    teams: dict[str, tuple[str, int]] = {}  # id -> (province, version)
    members: dict[str, tuple[str, int, bool]] = {}  # id -> (team, version, removed)
    started = last_say = time.monotonic()

    def roster() -> dict[str, TeamRef]:
        by_team: dict[str, list[str]] = {}
        for member_id, (team_id, _v, gone) in members.items():
            if not gone:
                by_team.setdefault(team_id, []).append(member_id)
        return {
            team_id: TeamRef(team_id, tuple(sorted(by_team[team_id])), province)
            for team_id, (province, _v) in teams.items()
            if by_team.get(team_id)
        }

    try:
        known = await partition_map(bootstrap, [TEAMS_TEAM.name, TEAMS_MEMBER.name])
        tps = [TopicPartition(topic, p) for topic, parts in known.items() for p in parts]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while True:
            ends = await consumer.end_offsets(tps)
            todo = {tp for tp in tps if ends[tp] > await consumer.position(tp)}
            while todo:
                batch = await consumer.getmany(*todo, timeout_ms=1000, max_records=20_000)
                for tp, records in batch.items():
                    for record in records:
                        if record.value is not None:
                            _apply_roster_record(
                                tp.topic, json.loads(record.value), prefix, teams, members
                            )
                for tp in list(todo):
                    if await consumer.position(tp) >= ends[tp]:
                        todo.discard(tp)
            current = roster()
            found = (len(current), sum(len(r.member_ids) for r in current.values()))
            if expect is None or found == expect:
                return current
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"roster on Kafka: {found}, expected {expect}")
            if say is not None and time.monotonic() - last_say > 10:
                last_say = time.monotonic()
                say(f"fixture: {found[0]:,} teams / {found[1]:,} members on Kafka so far")
            await asyncio.sleep(2)
    finally:
        await consumer.stop()


def _apply_roster_record(
    topic: str,
    data: dict[str, Any],
    prefix: str,
    teams: dict[str, tuple[str, int]],
    members: dict[str, tuple[str, int, bool]],
) -> None:
    if topic == TEAMS_TEAM.name:
        if not str(data.get("code", "")).startswith(prefix):
            return
        if data.get("status") != "active" or not data.get("unit_path"):
            teams.pop(data["id"], None)
            return
        old = teams.get(data["id"])
        if old is None or old[1] <= data["version"]:
            teams[data["id"]] = (data["unit_path"]["province"], data["version"])
        return
    if not str(data.get("code") or "").startswith(f"{prefix}M"):
        return
    old_m = members.get(data["id"])
    if old_m is None or old_m[1] <= data["version"]:
        members[data["id"]] = (
            data["team_id"],
            data["version"],
            bool(data.get("removed") or data.get("left_on")),
        )


@dataclass
class Fixture:
    plan: Plan
    roster: dict[str, TeamRef]
    reused: bool
    load: dict[str, Any]

    def teams_by_province(self) -> dict[str, list[TeamRef]]:
        result: dict[str, list[TeamRef]] = {}
        for ref in sorted(self.roster.values(), key=lambda t: t.team_id):
            result.setdefault(ref.province, []).append(ref)
        return result


async def _still_there(
    client: httpx.AsyncClient, teams_url: str, marker: dict[str, Any], roster: dict[str, TeamRef]
) -> bool:
    """A sample of the recorded team ids still answers from the teams API with its code."""
    checks = marker.get("checks", [])
    if not checks or len(roster) != marker.get("teams"):
        return False
    for check in checks:
        reply = await client.get(f"{teams_url}/v1/teams/{check['code']}")
        if reply.status_code != 200 or reply.json().get("id") != check["id"]:
            return False
        if check["id"] not in roster:
            return False
    return True


async def ensure_fixture(
    *,
    client: httpx.AsyncClient,
    teams_url: str,
    bootstrap: str,
    state_dir: Path,
    scale: Scale,
    seed: int,
    say: Callable[[str], None],
) -> Fixture:
    state_dir.mkdir(parents=True, exist_ok=True)
    the_plan = plan(scale, seed)
    marker_path = state_dir / f"fixture-{scale.name}-seed{seed}.json"
    roster_path = state_dir / f"roster-{scale.name}-seed{seed}.json"
    if marker_path.exists() and roster_path.exists():
        marker = json.loads(marker_path.read_text())
        roster = {
            t: TeamRef(t, tuple(m), p) for t, (p, m) in json.loads(roster_path.read_text()).items()
        }
        if await _still_there(client, teams_url, marker, roster):
            say(
                f"fixture {scale.name} (seed {seed}) already loaded on {marker['loaded_at']}: "
                f"{marker['teams']:,} teams, {marker['members']:,} members; reusing it"
            )
            return Fixture(the_plan, roster, True, marker.get("load", {}))
        say("fixture marker found but the teams API does not match it: loading again")
    say(
        f"fixture {scale.name} (seed {seed}): {len(the_plan.provinces)} provinces, "
        f"{len(the_plan.villages):,} villages, {len(the_plan.teams):,} teams, "
        f"{the_plan.members:,} members — loading through the bulk APIs"
    )
    started = time.perf_counter()
    load: dict[str, Any] = {}
    t = time.perf_counter()
    reply = await client.post(
        f"{teams_url}/v1/admin-units:import",
        json={"source": "vietnam-provinces"},
        timeout=httpx.Timeout(600),
    )
    reply.raise_for_status()
    load["units"] = {"rows": reply.json()["rows"], "seconds": round(time.perf_counter() - t, 1)}
    say(f"fixture units: {load['units']['rows']:,} rows in {load['units']['seconds']} s")
    load["villages"] = await bulk_upload(
        client,
        f"{teams_url}/v1/admin-units:import",
        "text/csv",
        the_plan.village_rows,
        say,
        "fixture villages",
    )
    load["teams"] = await bulk_upload(
        client, f"{teams_url}/v1/teams:bulk", "text/csv", the_plan.team_rows, say, "fixture teams"
    )
    load["members"] = await bulk_upload(
        client,
        f"{teams_url}/v1/members:bulk",
        "application/x-ndjson",
        the_plan.member_rows,
        say,
        "fixture members",
    )
    load["import_seconds"] = round(time.perf_counter() - started, 1)
    t = time.perf_counter()
    roster = await read_roster(
        bootstrap, scale.code_prefix, expect=(len(the_plan.teams), the_plan.members), say=say
    )
    load["roster_seconds"] = round(time.perf_counter() - t, 1)
    members = sum(len(r.member_ids) for r in roster.values())
    say(
        f"fixture imported in {load['import_seconds']} s; roster on Kafka (teams relay "
        f"published): {len(roster):,} teams, {members:,} members after {load['roster_seconds']} s"
    )
    if len(roster) != len(the_plan.teams) or members != the_plan.members:
        raise RuntimeError(
            f"roster mismatch: expected {len(the_plan.teams)} teams / {the_plan.members} members"
        )
    sample = random.Random(seed).sample(range(len(the_plan.teams)), k=min(5, len(the_plan.teams)))
    checks = []
    for n in sample:
        code = the_plan.teams[n][0]
        found = (await client.get(f"{teams_url}/v1/teams/{code}")).json()
        checks.append({"code": code, "id": found["id"]})
    marker = {
        "scale": scale.name,
        "seed": seed,
        "fingerprint": the_plan.fingerprint(),
        "provinces": len(the_plan.provinces),
        "villages": len(the_plan.villages),
        "teams": len(roster),
        "members": members,
        "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "load": load,
        "checks": checks,
    }
    roster_path.write_text(
        json.dumps({t: [r.province, list(r.member_ids)] for t, r in roster.items()})
    )
    marker_path.write_text(json.dumps(marker, indent=2))
    return Fixture(the_plan, roster, False, load)
