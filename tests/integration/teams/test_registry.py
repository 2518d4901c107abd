"""The teams registry against real Postgres and Kafka: units, teams, members, bulk, queries.

One in-process teams runtime for the module; each test uses its own codes so they do not
depend on each other's data (the package import is shared: it is idempotent).
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import func, select

from common import topics
from teams.adapters import service_tables
from tests.helpers import OPERATOR, headers_of, read_topic
from tests.integration.teams.conftest import (
    CSV,
    DONG_THAP,
    MY_THO,
    NDJSON,
    member,
    tag,
    team,
    village,
)


async def outbox_count(runtime: Any, key: str) -> int:
    outbox = service_tables.outbox
    async with runtime.sessions() as session:
        return int(
            await session.scalar(
                select(func.count()).select_from(outbox).where(outbox.c.aggregateid == key)
            )
        )


# --- administrative units -------------------------------------------------------------------


async def test_package_import_is_complete_and_idempotent(teams, infra) -> None:  # type: ignore[no-untyped-def]
    client, runtime = teams
    again = await client.post(
        "/v1/admin-units:import", json={"source": "vietnam-provinces"}, headers=OPERATOR
    )
    assert again.status_code == 200
    assert again.json()["rows"] == 3355
    assert again.json()["created"] == again.json()["updated"] == 0
    assert await outbox_count(runtime, DONG_THAP) == 1  # the re-import published nothing

    province = (await client.get(f"/v1/admin-units/{DONG_THAP}", headers=OPERATOR)).json()
    assert province["name"] == "Đồng Tháp" and province["level"] == "province"
    provinces = (
        await client.get("/v1/admin-units?level=province&limit=500", headers=OPERATOR)
    ).json()
    # the 34 current ones (the 63 retired ones of the legacy import may share the database)
    current = [p for p in provinces["items"] if p["valid_to"] is None]
    assert len(current) == 34 and provinces["next_cursor"] is None

    seen: list[str] = []
    cursor = None
    while True:
        url = f"/v1/admin-units?parent={DONG_THAP}&level=commune&limit=40"
        page = (
            await client.get(url + (f"&cursor={cursor}" if cursor else ""), headers=OPERATOR)
        ).json()
        seen += [u["code"] for u in page["items"]]
        assert all(
            u["path"]
            == {"province": DONG_THAP, "commune": u["code"], "district": None, "village": None}
            for u in page["items"]
        )
        if not (cursor := page["next_cursor"]):
            break
    assert len(seen) == len(set(seen)) == 102 and MY_THO in seen

    records = await read_topic(
        infra.kafka_bootstrap_servers,
        topics.TEAMS_ADMIN_UNIT.name,
        until=lambda rs: any(r.key == MY_THO.encode() for r in rs),
    )
    event = json.loads(next(r for r in records if r.key == MY_THO.encode()).value)
    assert event["path"]["province"] == DONG_THAP and event["change"] == "created"


async def test_village_creation_rules(teams) -> None:  # type: ignore[no-untyped-def]
    client, _ = teams
    code = await village(client)
    got = (await client.get(f"/v1/admin-units/{code}", headers=OPERATOR)).json()
    assert got["path"] == {
        "province": DONG_THAP,
        "district": None,
        "commune": MY_THO,
        "village": code,
    }

    def body(**over: Any) -> dict[str, Any]:
        return {
            "code": f"V{tag()}",
            "name": "Ấp",
            "level": "village",
            "parent_code": MY_THO,
            **over,
        }

    duplicate = await client.post("/v1/admin-units", json=body(code=code), headers=OPERATOR)
    assert duplicate.status_code == 409
    unknown = await client.post("/v1/admin-units", json=body(parent_code="NOPE"), headers=OPERATOR)
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["field"] == "parent_code"
    under_province = await client.post(
        "/v1/admin-units",
        json=body(parent_code=DONG_THAP),
        headers={**OPERATOR, "Accept-Language": "en"},
    )
    assert under_province.status_code == 422
    assert "cannot sit under a province" in under_province.json()["detail"]
    no_token = await client.post("/v1/admin-units", json=body())
    assert no_token.status_code == 401
    assert (await client.get("/v1/admin-units/NOPE", headers=OPERATOR)).status_code == 404


async def test_legacy_three_tier_csv_and_ndjson_villages(teams) -> None:  # type: ignore[no-untyped-def]
    client, _ = teams
    t = tag()
    legacy = (
        "code,name,level,parent_code,valid_from,valid_to\n"
        f"L{t},Tiền Giang (cũ),province,,1976-01-01,2025-06-30\n"
        f'L{t}-815,"Thành phố Mỹ Tho, cũ",district,L{t},1976-01-01,2025-06-30\n'
        f"L{t}-28249,Phường 1,commune,L{t}-815,,2025-06-30\n"
        f"L{t}-BAD,Xã lạc,commune,L{t}-MISSING,,2025-06-30\n"
        f"L{t}-V1,Ấp 1,village,L{t}-815,,\n"
        "too,few\n"
    )
    reply = await client.post("/v1/admin-units:import", content=legacy, headers=CSV)
    assert reply.status_code == 200, reply.text
    report = reply.json()
    assert (report["rows"], report["created"], report["rejected"]) == (6, 3, 3)
    assert {(e["row"], e["field"]) for e in report["errors"]} == {
        (4, "parent_code"),
        (5, "parent_code"),
        (6, None),
    }
    commune = (await client.get(f"/v1/admin-units/L{t}-28249", headers=OPERATOR)).json()
    assert commune["path"]["district"] == f"L{t}-815"
    assert commune["valid_to"] == "2025-06-30"

    lines = [
        {"code": f"{MY_THO}-N{t}1", "name": "Khóm 1", "level": "village", "parent_code": MY_THO},
        {"code": f"{MY_THO}-N{t}2", "name": "Khóm 2", "level": "village", "parent_code": MY_THO},
        {"code": f"{MY_THO}-N{t}3", "name": "Khóm 3", "level": "hamlet", "parent_code": MY_THO},
    ]
    body = "\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n{not json\n"
    reply = await client.post("/v1/admin-units:import", content=body, headers=NDJSON)
    assert reply.json()["created"] == 2 and reply.json()["rejected"] == 2
    assert {(e["row"], e["field"]) for e in reply.json()["errors"]} == {(3, "level"), (4, None)}
    wrong_type = await client.post("/v1/admin-units:import", content="x", headers=OPERATOR)
    assert wrong_type.status_code in (400, 415)


# --- teams and members ----------------------------------------------------------------------


async def test_names_are_stored_in_nfc_and_trimmed(teams) -> None:  # type: ignore[no-untyped-def]
    client, _ = teams
    unit = await village(client)
    nfd = unicodedata.normalize("NFD", "Tổ Hòa Bình")
    created = await team(client, unit, name=f"  {nfd} ")
    assert created["name"] == "Tổ Hòa Bình"
    person = await member(
        client, created["id"], full_name=unicodedata.normalize("NFD", "Lê Thị Hòa")
    )
    assert person["full_name"] == "Lê Thị Hòa"
    nul = await client.post(
        "/v1/teams",
        json={"code": f"X-{tag()}", "name": "Tổ\u0000", "unit_code": unit},
        headers=OPERATOR,
    )
    assert nul.status_code == 422 and [e["field"] for e in nul.json()["errors"]] == ["body.name"]


async def test_team_members_health_training_and_dissolution(teams, infra) -> None:  # type: ignore[no-untyped-def]
    client, _ = teams
    unit = await village(client)
    created = await team(client, unit)
    assert created["unit_path"] == {
        "province": DONG_THAP,
        "district": None,
        "commune": MY_THO,
        "village": unit,
    }
    assert set(created["health"]["issues"]) == {"too_few_members", "no_leader", "no_trained_member"}
    for bad_unit, expected in (("NOPE", 422), (DONG_THAP, 422)):
        reply = await client.post(
            "/v1/teams",
            json={"code": f"X-{tag()}", "name": "x", "unit_code": bad_unit},
            headers=OPERATOR,
        )
        assert reply.status_code == expected
        assert reply.json()["errors"][0]["field"] == "unit_code"

    team_id = created["id"]
    leader = await member(client, team_id, role="leader", code=f"M-{tag()}")
    for _ in range(3):
        await member(client, team_id)
    assert leader["phone"] == "0912345678"  # the operator sees it
    anonymous = await client.get(f"/v1/members/{leader['id']}")
    assert anonymous.status_code == 401  # reads need the operator token or a partner key
    by_code = (await client.get(f"/v1/members/{leader['code']}", headers=OPERATOR)).json()
    assert by_code["id"] == leader["id"] and by_code["phone"] == "0912345678"

    trained = await client.post(
        f"/v1/members/{leader['id']}/trainings",
        json={"course": "MOOC Kỹ năng số", "completed_on": "2023-05-01"},
        headers=OPERATOR,
    )
    assert trained.status_code == 201 and trained.json()["member"]["trained"] is True
    healthy = (await client.get(f"/v1/teams/{created['code']}", headers=OPERATOR)).json()
    assert healthy["health"] == {"ok": True, "size": 4, "leaders": 1, "trained": 1, "issues": []}
    assert healthy["leader_member_id"] == leader["id"]

    left = await client.patch(
        f"/v1/members/{leader['id']}", json={"left_on": "2021-01-01"}, headers=OPERATOR
    )
    assert left.status_code == 422  # before joined_on: nothing changed
    removed = await client.patch(
        f"/v1/members/{leader['id']}", json={"removed": True}, headers=OPERATOR
    )
    assert removed.json()["removed"] is True and removed.json()["version"] == 3

    dissolved = await client.post(
        f"/v1/teams/{team_id}:dissolve", json={"dissolved_on": "2024-01-01"}, headers=OPERATOR
    )
    assert dissolved.status_code == 200 and dissolved.json()["status"] == "dissolved"
    late = await client.post(
        f"/v1/teams/{team_id}/members",
        json={
            "full_name": "B",
            "role": "member",
            "affiliation": "other",
            "joined_on": "2024-02-01",
        },
        headers=OPERATOR,
    )
    assert late.status_code == 409 and late.headers["content-type"] == "application/problem+json"
    again = await client.post(
        f"/v1/teams/{team_id}:dissolve", json={"dissolved_on": "2024-01-01"}, headers=OPERATOR
    )
    assert again.status_code == 409

    records = await read_topic(
        infra.kafka_bootstrap_servers,
        topics.TEAMS_MEMBER.name,
        until=lambda rs: sum(r.key == leader["id"].encode() for r in rs) >= 3,
    )
    events = [json.loads(r.value) for r in records if r.key == leader["id"].encode()]
    assert [e["version"] for e in events] == [1, 2, 3]
    assert events[1]["trained"] is True and events[2]["removed"] is True
    assert all("phone" not in e and "0912345678" not in json.dumps(e) for e in events)
    assert headers_of(records[0])["ce_type"] == "vn.cdt.teams.member.v1"
    team_events = await read_topic(
        infra.kafka_bootstrap_servers,
        topics.TEAMS_TEAM.name,
        until=lambda rs: sum(r.key == team_id.encode() for r in rs) >= 2,
    )
    last = [json.loads(r.value) for r in team_events if r.key == team_id.encode()][-1]
    assert last["status"] == "dissolved" and last["unit_path"]["village"] == unit


async def test_bulk_teams_and_members_report_rows_and_are_idempotent(teams) -> None:  # type: ignore[no-untyped-def]
    client, runtime = teams
    unit = await village(client)
    t = tag()
    teams_csv = (
        "code,name,unit_code,established_on,decision_no\n"
        f"B{t}-1,Tổ 1,{unit},2022-04-01,1/QĐ\n"
        f"B{t}-2,Tổ 2,{MY_THO},2022-04-01,\n"
        f"B{t}-3,Tổ 3,NOPE,2022-04-01,\n"
        f"B{t}-4,Tổ 4,{unit},not-a-date,\n"
        f"B{t}-1,Tổ 1 again,{unit},,\n"
    )
    first = (await client.post("/v1/teams:bulk", content=teams_csv, headers=CSV)).json()
    assert (first["rows"], first["created"], first["rejected"]) == (5, 2, 3)
    assert {(e["row"], e["field"]) for e in first["errors"]} == {
        (3, "unit_code"),
        (4, "established_on"),
        (5, "code"),
    }
    second = (await client.post("/v1/teams:bulk", content=teams_csv, headers=CSV)).json()
    assert (second["created"], second["updated"], second["unchanged"]) == (0, 0, 2)

    rows = [
        {
            "code": f"BM{t}-{i}",
            "team_code": f"B{t}-1",
            "full_name": f"Thành viên {i}",
            "role": "leader" if i == 0 else "member",
            "affiliation": "enterprise",
            "enterprise_name": "VNPT",
            "phone": "0912 345 678",
            "joined_on": "2022-04-01",
            "training_course": "Kỹ năng số" if i < 2 else None,
            "training_completed_on": "2023-01-01" if i < 2 else None,
        }
        for i in range(5)
    ]
    rows.append({**rows[1], "code": f"BM{t}-X", "team_code": f"B{t}-3"})
    rows.append({**rows[1], "code": f"BM{t}-Y", "role": "captain"})
    # A rejected value no generated code can contain (codes are digits and hex letters).
    rows.append({**rows[1], "code": f"BM{t}-Z", "phone": "+84-PHONE-XYZ"})
    body = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows)
    report = (await client.post("/v1/members:bulk", content=body, headers=NDJSON)).json()
    assert (report["created"], report["rejected"]) == (5, 3)
    assert {(e["row"], e["field"]) for e in report["errors"]} == {
        (6, "team_code"),
        (7, "role"),
        (8, "phone"),
    }
    assert "PHONE-XYZ" not in json.dumps(report["errors"])  # the rejected phone is not echoed
    team_view = (await client.get(f"/v1/teams/B{t}-1", headers=OPERATOR)).json()
    assert team_view["health"]["size"] == 5 and team_view["health"]["trained"] == 2
    assert team_view["health"]["ok"] is True
    member_id = (await client.get(f"/v1/members/BM{t}-0", headers=OPERATOR)).json()["id"]
    events_before = await outbox_count(runtime, member_id)
    again = (await client.post("/v1/members:bulk", content=body, headers=NDJSON)).json()
    assert (again["created"], again["updated"], again["unchanged"]) == (0, 0, 5)
    assert await outbox_count(runtime, member_id) == events_before

    unsupported = await client.post(
        "/v1/teams:bulk", content="x", headers={**OPERATOR, "Content-Type": "text/plain"}
    )
    assert unsupported.status_code == 415
    bad_header = await client.post("/v1/teams:bulk", content="code,colour\n1,red\n", headers=CSV)
    assert bad_header.status_code == 422 and "colour" in bad_header.json()["detail"]
    assert (
        await client.post("/v1/teams:bulk", content=teams_csv, headers={"Content-Type": "text/csv"})
    ).status_code == 401


async def test_streamed_bulk_of_many_rows(teams) -> None:  # type: ignore[no-untyped-def]
    client, _ = teams
    t = tag()
    count = 5_000

    async def body() -> AsyncIterator[bytes]:
        yield b"code,name,unit_code\n"
        for start in range(0, count, 500):
            yield "".join(f"S{t}-{i},Tổ {i},{MY_THO}\n" for i in range(start, start + 500)).encode()

    reply = await client.post("/v1/teams:bulk", content=body(), headers=CSV)
    assert reply.status_code == 200, reply.text
    assert reply.json()["created"] == count and reply.json()["rejected"] == 0


# --- queries and re-organisation ------------------------------------------------------------


async def test_subtree_listing_and_coverage(teams) -> None:  # type: ignore[no-untyped-def]
    client, _ = teams
    commune = "28249"  # Phường Đạo Thạnh, Đồng Tháp: only this test puts teams here
    villages = [await village(client, commune=commune) for _ in range(3)]
    t1 = await team(client, villages[0])
    await team(client, villages[1])
    await team(client, commune)  # a commune-level team
    lead = await member(client, t1["id"], role="leader")
    await member(client, t1["id"])
    await client.post(
        f"/v1/members/{lead['id']}/trainings",
        json={"course": "c", "completed_on": "2023-01-01"},
        headers=OPERATOR,
    )

    listed: list[str] = []
    cursor = None
    while True:
        url = f"/v1/teams?unit={commune}&limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = (await client.get(url, headers=OPERATOR)).json()
        listed += [x["id"] for x in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert len(listed) == len(set(listed)) == 3
    in_village = (await client.get(f"/v1/teams?unit={villages[0]}", headers=OPERATOR)).json()[
        "items"
    ]
    assert [x["id"] for x in in_village] == [t1["id"]]

    cov = (await client.get(f"/v1/admin-units/{commune}/coverage", headers=OPERATOR)).json()
    assert {
        k: cov[k]
        for k in (
            "teams",
            "members",
            "trained_members",
            "villages",
            "villages_with_team",
            "villages_without_team",
        )
    } == {
        "teams": 3,
        "members": 2,
        "trained_members": 1,
        "villages": 3,
        "villages_with_team": 2,
        "villages_without_team": 1,
    }
    province = (await client.get(f"/v1/admin-units/{DONG_THAP}/coverage", headers=OPERATOR)).json()
    assert province["teams"] >= 3
    child = next(c for c in province["children"] if c["code"] == commune)
    assert child["teams"] == 3 and child["villages_without_team"] == 1


async def test_merge_moves_teams_and_publishes_crosswalk(teams, infra) -> None:  # type: ignore[no-untyped-def]
    client, _ = teams
    a, b = await village(client), await village(client)
    team_a = await team(client, a)
    merged = await client.post(
        "/v1/admin-units:merge",
        json={"sources": [a], "into": b, "effective_on": "2026-01-01"},
        headers=OPERATOR,
    )
    assert merged.status_code == 200, merged.text
    assert merged.json()["units"] == {a: "merged"} and merged.json()["teams_moved"] == 1
    moved = (await client.get(f"/v1/teams/{team_a['id']}", headers=OPERATOR)).json()
    assert moved["unit_code"] == b and moved["unit_path"]["village"] == b
    old = (await client.get(f"/v1/admin-units/{a}", headers=OPERATOR)).json()
    assert old["replaced_by"] == [b] and old["valid_to"] == "2025-12-31"
    walk = (await client.get(f"/v1/admin-units:crosswalk?code={a}", headers=OPERATOR)).json()[
        "items"
    ]
    assert [(w["old_code"], w["new_code"], w["change"]) for w in walk] == [(a, b, "merged")]
    stale = await client.post(
        "/v1/teams", json={"code": f"Z-{tag()}", "name": "z", "unit_code": a}, headers=OPERATOR
    )
    assert stale.status_code == 422 and b in stale.json()["detail"]

    units = await read_topic(
        infra.kafka_bootstrap_servers,
        topics.TEAMS_ADMIN_UNIT.name,
        until=lambda rs: any(r.key == a.encode() and b'"merged"' in r.value for r in rs),
    )
    event = json.loads(
        next(r.value for r in units if r.key == a.encode() and b'"merged"' in r.value)
    )
    assert event["replaced_by"] == [b] and event["valid_to"] == "2025-12-31"
    team_events = await read_topic(
        infra.kafka_bootstrap_servers,
        topics.TEAMS_TEAM.name,
        until=lambda rs: sum(r.key == team_a["id"].encode() for r in rs) >= 2,
    )
    latest = [json.loads(r.value) for r in team_events if r.key == team_a["id"].encode()][-1]
    assert latest["unit_code"] == b and latest["unit_path"]["village"] == b


async def test_split_and_reparent_with_cycle_check(teams) -> None:  # type: ignore[no-untyped-def]
    client, _ = teams
    source, x, y = "28273", "28270", "28285"  # three Đồng Tháp wards
    v1, v2 = await village(client, commune=source), await village(client, commune=source)
    t1, t2 = await team(client, v1), await team(client, source)
    t3 = await team(client, source)
    split = await client.post(
        f"/v1/admin-units/{source}:split",
        json={"into": [x, y], "effective_on": "2026-01-01", "assign": {v2: y, t3["code"]: y}},
        headers=OPERATOR,
    )
    assert split.status_code == 200, split.text
    assert split.json()["units"][source] == "split"
    assert split.json()["units"][v1] == split.json()["units"][v2] == "reparented"
    assert (await client.get(f"/v1/admin-units/{v2}", headers=OPERATOR)).json()["parent_code"] == y
    assert (await client.get(f"/v1/teams/{t1['id']}", headers=OPERATOR)).json()["unit_path"][
        "commune"
    ] == x
    assert (await client.get(f"/v1/teams/{t2['id']}", headers=OPERATOR)).json()["unit_code"] == x
    assert (await client.get(f"/v1/teams/{t3['id']}", headers=OPERATOR)).json()["unit_code"] == y

    moved = await client.post(
        f"/v1/admin-units/{v1}:reparent",
        json={"parent_code": y, "effective_on": "2026-02-01"},
        headers=OPERATOR,
    )
    assert moved.status_code == 200 and moved.json()["units"] == {v1: "reparented"}
    assert (await client.get(f"/v1/teams/{t1['id']}", headers=OPERATOR)).json()["unit_path"][
        "commune"
    ] == y
    wrong_level = await client.post(
        f"/v1/admin-units/{y}:reparent",
        json={"parent_code": v1, "effective_on": "2026-02-01"},
        headers=OPERATOR,
    )
    assert wrong_level.status_code == 422
    stray = await client.post(
        f"/v1/admin-units/{x}:split",
        json={"into": [y], "effective_on": "2026-03-01", "assign": {"NOPE": y}},
        headers=OPERATOR,
    )
    assert stray.status_code == 422 and stray.json()["errors"][0]["field"] == "assign"
    assert (await client.get(f"/v1/admin-units/{x}", headers=OPERATOR)).json()[
        "valid_to"
    ] is None  # untouched


async def test_cli_imports_units_with_progress(teams, subprocess_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import asyncio
    import sys

    client, _ = teams
    t = tag()
    path = tmp_path / "villages.csv"
    path.write_text(
        "code,name,level,parent_code\n"
        f"{MY_THO}-C{t}1,Khóm 1,village,{MY_THO}\n"
        f"{MY_THO}-C{t}2,Khóm 2,village,NOPE\n",
        encoding="utf-8",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "teams",
        "import-units",
        "--file",
        str(path),
        env=subprocess_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 1, err.decode()  # one row rejected
    report = json.loads(out)
    assert (report["created"], report["rejected"]) == (1, 1)
    assert "2 rows: 1 created" in err.decode()
    assert (
        await client.get(f"/v1/admin-units/{MY_THO}-C{t}1", headers=OPERATOR)
    ).status_code == 200
