"""Name search across the national roster: latency of `GET /v1/members?q=` and friends.

`python -m tests.load.bench_search [members]`: stores a national-shaped registry straight into
the teams tables (34 provinces, 3,321 communes, 74,422 teams, 348,362 members by default, with
Vietnamese names drawn from common family, middle and given names), then calls the search
endpoints in-process (the FastAPI app over ASGI, operator token) and prints p50 / p95 / max per
kind of query, with the rows each kind matches. The issue's aim: p95 < 50 ms across the members.
"""

# isort: skip_file
from __future__ import annotations

import asyncio
import os
import random
import statistics
import sys
import time
import uuid
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [
    str(ROOT / p) for p in ("deploy", "libs", "services") if str(ROOT / p) not in sys.path
]

import httpx  # noqa: E402

from tests.load.bench_infra import bench_infra  # noqa: E402

TOKEN = "bench-operator-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FAMILY = ("Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng", "Bùi",
          "Đỗ", "Hồ", "Ngô", "Dương", "Lý")  # fmt: skip
MIDDLE = ("Văn", "Thị", "Hữu", "Đức", "Minh", "Ngọc", "Thanh", "Quốc", "Xuân", "Thu", "Kim",
          "Bảo", "Gia", "Hoài")  # fmt: skip
GIVEN = ("An", "Bình", "Cường", "Dũng", "Đạt", "Giang", "Hà", "Hải", "Hạnh", "Hòa", "Hùng",
         "Hương", "Khánh", "Khuê", "Lan", "Linh", "Long", "Mai", "Nam", "Nga", "Ngân", "Nhung",
         "Phong", "Phúc", "Phượng", "Quân", "Quyên", "Sơn", "Tâm", "Thảo", "Thắng", "Thủy",
         "Trang", "Trung", "Tuấn", "Tuyết", "Uyên", "Việt", "Xuân", "Yến")  # fmt: skip
PLACES = ("Hòa Bình", "Tân Phú", "Mỹ Tho", "Đồng Tháp", "Bình Thạnh", "An Khánh", "Phú Mỹ",
          "Long Hưng", "Thạnh Lợi", "Hưng Thịnh")  # fmt: skip
QUERIES = {
    "full name, accents off": ["nguyen van hoa", "tran thi lan", "le minh tuan", "vo ngoc yen"],
    "full name, as written": ["Nguyễn Văn Hòa", "Trần Thị Lan", "Đặng Quốc Việt"],
    "given name (common)": ["hoa", "lan", "dung"],
    "given name (rare)": ["khue", "quyen"],
    "family + given": ["dang khue", "ly uyen"],
}
REPEATS = 40


def national(members: int) -> tuple[list[tuple], list[tuple], list[tuple]]:  # type: ignore[type-arg]
    rng = random.Random(3)
    units: list[tuple] = []  # type: ignore[type-arg]
    teams: list[tuple] = []  # type: ignore[type-arg]
    people: list[tuple] = []  # type: ignore[type-arg]
    team_count = round(members / 348_362 * 74_422)
    communes = max(1, team_count // 22)
    for p in range(34):
        code = f"{p + 1:02d}"
        units.append((code, f"Tỉnh {PLACES[p % len(PLACES)]} {p}", "province", None, code))
    for c in range(communes):
        province = f"{c % 34 + 1:02d}"
        code = f"{province}{c:05d}"
        name = f"Xã {rng.choice(PLACES)} {c}"
        units.append((code, name, "commune", province, f"{province}/{code}"))
    for t in range(team_count):
        commune = units[34 + t // 22 if t // 22 < communes else 34 + communes - 1]
        team_id = uuid.UUID(int=rng.getrandbits(128))
        name = f"Tổ Công nghệ số cộng đồng ấp {rng.choice(PLACES)} {t}"
        teams.append((team_id, f"T{t:06d}", name, commune[0], "active", 1))
    for m in range(members):
        team = teams[m * len(teams) // members]
        name = f"{rng.choice(FAMILY)} {rng.choice(MIDDLE)} {rng.choice(GIVEN)}"
        people.append((uuid.UUID(int=rng.getrandbits(128)), team[0], name, "member", "resident",
                       date(2022, 4, 1), 1))  # fmt: skip
    return units, teams, people


async def load(database_url: str, members: int) -> None:
    import asyncpg

    units, teams, people = national(members)
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
    connection = await asyncpg.connect(dsn)
    try:
        await connection.copy_records_to_table(
            "admin_units", schema_name="teams", records=[(*u, "bench", 1) for u in units],
            columns=["code", "name", "level", "parent_code", "path", "source", "version"],
        )  # fmt: skip
        await connection.copy_records_to_table(
            "teams", schema_name="teams", records=teams,
            columns=["id", "code", "name", "unit_code", "status", "version"],
        )  # fmt: skip
        await connection.copy_records_to_table(
            "members", schema_name="teams", records=people,
            columns=["id", "team_id", "full_name", "role", "affiliation", "joined_on", "version"],
        )  # fmt: skip
        await connection.execute("VACUUM ANALYZE teams.admin_units, teams.teams, teams.members")
    finally:
        await connection.close()
    print(f"stored {len(units):,} units, {len(teams):,} teams, {len(people):,} members", flush=True)


async def bench(members: int) -> None:
    from teams import bootstrap
    from teams.settings import TeamsSettings

    runtime = bootstrap.build_runtime(TeamsSettings())
    await runtime.migrate()
    await load(os.environ["DATABASE_URL"], members)
    app = bootstrap.build_app(runtime)
    await runtime.start(workers=False)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            print(f"{'query':<28} {'matches':>8} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
            every: list[float] = []
            for kind, queries in QUERIES.items():
                every += await report(client, "/v1/members", kind, queries)
            for query in ("dang khue", "ly uyen"):
                await report(client, "/v1/members", f"  only {query!r}", [query])
            every.sort()
            print(
                f"{'members, all of the above':<28} {'':>8} {statistics.median(every):>8.1f} "
                f"{every[int(len(every) * 0.95) - 1]:>8.1f} {every[-1]:>8.1f}",
                flush=True,
            )
            await report(client, "/v1/teams", "teams: place name", ["hoa binh", "tan phu"])
            await report(client, "/v1/admin-units", "units: place name", ["dong thap", "my tho"])
    finally:
        await runtime.stop()


async def report(
    client: httpx.AsyncClient, path: str, kind: str, queries: list[str]
) -> list[float]:
    timings: list[float] = []
    matched = 0
    for query in queries:  # warm once, then measure
        await client.get(path, params={"q": query}, headers=AUTH)
    for _ in range(REPEATS):
        for query in queries:
            started = time.perf_counter()
            reply = await client.get(path, params={"q": query}, headers=AUTH)
            timings.append((time.perf_counter() - started) * 1000)
            assert reply.status_code == 200, reply.text
            matched = max(matched, len(reply.json()["items"]))
    timings.sort()
    p95 = timings[int(len(timings) * 0.95) - 1]
    print(
        f"{kind:<28} {matched:>8} {statistics.median(timings):>8.1f} {p95:>8.1f} "
        f"{timings[-1]:>8.1f}",
        flush=True,
    )
    return timings


def main() -> None:
    members = int(sys.argv[1]) if len(sys.argv) > 1 else 348_362
    with bench_infra("cdt-bench-search-") as (infra, _):
        os.environ.update(
            {
                "DATABASE_URL": infra.database_url,
                "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap_servers,
                "CDT_ADMIN_TOKEN": TOKEN,
                "CDT_ENV": "test",
                "CDT_TRACES_EXPORTER": "none",
                "CDT_LOG_LEVEL": "WARNING",
            }
        )
        asyncio.run(bench(members))


if __name__ == "__main__":
    main()
