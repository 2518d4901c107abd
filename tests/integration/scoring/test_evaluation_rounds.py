"""Evaluation rounds on real PostgreSQL and Kafka: a round approved freezes its unit's scores;
its report (JSON, CSV with a BOM, XLSX) stays byte for byte the same while the live scores move;
reopening and approving again keeps both approvals; every move is an event on Kafka."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import openpyxl
from sqlalchemy import text

from common.contracts.notifications import AlertRaised
from common.contracts.teams import AdminUnitChanged
from common.topics import EVALUATION_ROUND
from scoring import adapters
from tests.helpers import OPERATOR, eventually, read_topic
from tests.integration.scoring.conftest import produce, wait_processed
from tests.unit.scoring import factory

PERIOD = factory.NOW.strftime("%Y-%m")
BOM = "\ufeff"
ENGLISH = {**OPERATOR, "Accept-Language": "en"}  # for the English texts asserted


def unit(code: str, name: str, level: str, path: Any, parent: str | None) -> AdminUnitChanged:
    return AdminUnitChanged(
        code=code,
        name=name,
        level=level,  # type: ignore[arg-type]
        parent_code=parent,
        path=path,
        version=1,
        changed_at=datetime.now(UTC),
    )


async def _province_with_two_teams(producer: Any, runtime: Any) -> dict[str, Any]:
    province = f"E{uuid.uuid4().hex[:6]}"
    commune = f"{province}-C1"
    villages = [f"{commune}-V1", f"{commune}-V2"]
    teams = [uuid.uuid4(), uuid.uuid4()]
    places = [factory.path(province, commune, village) for village in villages]
    units = [
        unit(province, "Tỉnh Đồng Tháp thử", "province", factory.path(province), None),
        unit(commune, "Xã Hòa Bình", "commune", factory.path(province, commune), province),
        *(
            unit(v, f"Ấp Hòa Thạnh {i}", "village", p, commune)
            for i, (v, p) in enumerate(zip(villages, places, strict=True), 1)
        ),
    ]
    named = [
        factory.team(team_id=t, unit_path=p).model_copy(update={"name": f"Tổ CNSCĐ Ấp {i}"})
        for i, (t, p) in enumerate(zip(teams, places, strict=True), 1)
    ]
    activities = [
        factory.activity(team_id=teams[0], unit_path=places[0], household_hash=f"h{i}")
        for i in range(2)
    ] + [factory.activity(team_id=teams[1], unit_path=places[1], household_hash="h9")]
    await wait_processed(runtime, await produce(producer, *units, *named))
    await wait_processed(runtime, await produce(producer, *activities))
    return {"province": province, "teams": teams, "places": places, "activities": activities}


async def _scored(
    client: Any, level: str, code: str, *, activities: int, newer_than: int = 0
) -> dict[str, Any]:
    """The score once published with `activities`, in a version after `newer_than` (a change
    that leaves the count where it was needs the version to tell before from after)."""

    async def published() -> dict[str, Any] | None:
        reply = await client.get(f"/v1/scores/{level}/{code}", params={"period": PERIOD})
        body: dict[str, Any] = reply.json()
        done = reply.status_code == 200 and body["version"] > newer_than
        return body if done and body["indicators"].get("activities") == activities else None

    return await eventually(published, timeout=30, what=f"{level} {code} scored")


async def _scored_province(client: Any, producer: Any, runtime: Any) -> dict[str, Any]:
    """The province of two teams, once its score and its teams' scores are published."""
    world = await _province_with_two_teams(producer, runtime)
    await _scored(client, "province", world["province"], activities=3)
    for team in world["teams"]:
        await _scored(client, "team", str(team), activities=2 if team == world["teams"][0] else 1)
    return world


async def _open_round(client: Any, province: str) -> Any:
    return await client.post(
        "/v1/evaluation-rounds",
        json={"level": "province", "unit_code": province, "period": PERIOD, "due_on": "2026-12-10"},
        headers=OPERATOR,
    )


async def _report(client: Any, round_id: str, fmt: str, **params: Any) -> bytes:
    headers = params.pop("headers", {})
    reply = await client.get(
        f"/v1/evaluation-rounds/{round_id}/report",
        params={"format": fmt, **params},
        headers=headers,
    )
    assert reply.status_code == 200, reply.text
    return reply.content


async def test_an_approved_round_freezes_its_report_while_live_scores_move(
    scoring: Any, producer: Any, infra: Any
) -> None:
    client, runtime = scoring
    world = await _scored_province(client, producer, runtime)
    province = world["province"]

    opened = await _open_round(client, province)
    assert opened.status_code == 201, opened.text
    round_id = opened.json()["id"]
    assert opened.headers["Location"] == f"/v1/evaluation-rounds/{round_id}"
    assert opened.json()["state"] == "open"

    early = await client.post(f"/v1/evaluation-rounds/{round_id}:approve", headers=ENGLISH)
    assert early.status_code == 409
    assert "open cannot be approved" in early.json()["detail"]
    submitted = await client.post(f"/v1/evaluation-rounds/{round_id}:submit", headers=OPERATOR)
    assert submitted.json()["state"] == "under_review"
    approved = await client.post(f"/v1/evaluation-rounds/{round_id}:approve", headers=OPERATOR)
    assert approved.status_code == 200, approved.text
    view = approved.json()
    assert view["state"] == "approved" and view["approvals"] == 1
    assert view["snapshots"][0]["approval"] == 1 and view["snapshots"][0]["subjects"] >= 6
    assert view["latest_snapshot"]["late_changes"] == 0
    twice = await client.post(f"/v1/evaluation-rounds/{round_id}:approve", headers=ENGLISH)
    assert twice.status_code == 409 and "approved cannot be approved" in twice.json()["detail"]

    frozen_csv = await _report(client, round_id, "csv")
    frozen_json = await _report(client, round_id, "json")
    frozen_xlsx = await _report(client, round_id, "xlsx")
    text = frozen_csv.decode("utf-8")
    assert text.startswith(BOM)
    table = list(csv.DictReader(io.StringIO(text.removeprefix(BOM))))
    by_name = {row["Tên"]: row for row in table}
    assert {"Tỉnh Đồng Tháp thử", "Xã Hòa Bình", "Tổ CNSCĐ Ấp 1", "Tổ CNSCĐ Ấp 2"} <= set(by_name)
    assert [row["Cấp"] for row in table][:2] == ["Tỉnh, thành phố", "Xã, phường, đặc khu"]
    team_row = by_name["Tổ CNSCĐ Ấp 1"]
    assert team_row["Tên đơn vị cấp trên"] == "Ấp Hòa Thạnh 1"
    assert team_row["Số hoạt động"] == "2"
    indicators = (
        await client.get(f"/v1/indicators/province/{province}", params={"period": PERIOD})
    ).json()["indicators"]
    assert int(by_name["Tỉnh Đồng Tháp thử"]["Số tổ"]) == indicators["teams"] == 2
    assert int(by_name["Tỉnh Đồng Tháp thử"]["Số hoạt động"]) == indicators["activities"] == 3

    # The live scores move: one more activity, one voided.
    before = await _scored(client, "province", province, activities=3)
    more = factory.activity(team_id=world["teams"][1], unit_path=world["places"][1])
    await wait_processed(
        runtime, await produce(producer, more, factory.void(world["activities"][0]))
    )
    live = await _scored(  # +1 −1: the same count, a newer version
        client, "province", province, activities=3, newer_than=before["version"]
    )
    await _scored(client, "team", str(world["teams"][0]), activities=1)
    assert await _report(client, round_id, "csv") == frozen_csv
    assert await _report(client, round_id, "json") == frozen_json
    assert _cells(await _report(client, round_id, "xlsx")) == _cells(frozen_xlsx)
    view = (await client.get(f"/v1/evaluation-rounds/{round_id}")).json()
    assert view["latest_snapshot"]["late_changes"] >= 2  # the province and both teams at least
    assert view["latest_snapshot"]["live_score"] == live["score"]

    # Reopen (a reason is required), submit and approve again: both approvals kept.
    bare = await client.post(f"/v1/evaluation-rounds/{round_id}:reopen", headers=ENGLISH)
    assert bare.status_code == 409 and "needs a reason" in bare.json()["detail"]
    reopened = await client.post(
        f"/v1/evaluation-rounds/{round_id}:reopen",
        json={"reason": "Số liệu tổ 1 bị nhập trùng"},
        headers=OPERATOR,
    )
    assert reopened.json()["state"] == "reopened"
    await client.post(f"/v1/evaluation-rounds/{round_id}:submit", headers=OPERATOR)
    again = await client.post(f"/v1/evaluation-rounds/{round_id}:approve", headers=OPERATOR)
    assert again.json()["approvals"] == 2
    assert [t["action"] for t in again.json()["transitions"]] == [
        "open",
        "submit",
        "approve",
        "reopen",
        "submit",
        "approve",
    ]
    assert again.json()["transitions"][3]["reason"] == "Số liệu tổ 1 bị nhập trùng"
    assert await _report(client, round_id, "csv", approval=1) == frozen_csv
    second = (await _report(client, round_id, "csv", approval=2)).decode()
    second_rows = {r["Tên"]: r for r in csv.DictReader(io.StringIO(second.removeprefix(BOM)))}
    assert second_rows["Tổ CNSCĐ Ấp 1"]["Số hoạt động"] == "1"
    assert second_rows["Tổ CNSCĐ Ấp 2"]["Số hoạt động"] == "2"

    # Every move is an event other systems can follow.
    def moves(records: list[Any]) -> list[str]:
        return [json.loads(r.value)["state"] for r in records if r.key.decode() == str(round_id)]

    records = await read_topic(
        infra.kafka_bootstrap_servers, EVALUATION_ROUND.name, until=lambda rs: len(moves(rs)) >= 6
    )
    assert moves(records) == [
        "open",
        "under_review",
        "approved",
        "reopened",
        "under_review",
        "approved",
    ]


def _cells(workbook: bytes) -> dict[str, list[tuple[object, ...]]]:
    book = openpyxl.load_workbook(io.BytesIO(workbook), read_only=True)
    return {sheet.title: list(sheet.iter_rows(values_only=True)) for sheet in book.worksheets}


async def test_the_xlsx_report_has_a_summary_and_a_sheet_per_level_in_the_reader_language(
    scoring: Any, producer: Any
) -> None:
    client, runtime = scoring
    world = await _province_with_two_teams(producer, runtime)
    province = world["province"]
    await _scored(client, "province", province, activities=3)
    params = {"level": "province", "unit_code": province, "period": PERIOD, "format": "xlsx"}
    reply = await client.get("/v1/reports/scores", params=params)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("application/vnd.openxmlformats")
    sheets = _cells(reply.content)
    assert list(sheets) == [
        "Tổng hợp",
        "Tỉnh, thành phố",
        "Xã, phường, đặc khu",
        "Thôn, tổ dân phố",
        "Tổ Công nghệ số cộng đồng",
    ]
    summary = {row[0]: row[1:] for row in sheets["Tổng hợp"][3:]}
    assert summary["Số tổ"] == (2, None)
    assert summary["Thôn, tổ dân phố có tổ"] == (2, 2)
    assert summary["Xã, phường có tổ"] == (1, 1)
    header, *teams = sheets["Tổ Công nghệ số cộng đồng"]
    assert header[:3] == ("Mã", "Tên", "Mã đơn vị cấp trên")  # the sheet names the level
    rows = {row[1]: dict(zip(header, row, strict=True)) for row in teams}
    first = rows["Tổ CNSCĐ Ấp 1"]
    assert first["Số hoạt động"] == 2 and isinstance(first["Điểm"], float | int)
    assert first["Tên đơn vị cấp trên"] == "Ấp Hòa Thạnh 1"
    assert first["Xếp hạng"] == 1 and first["Trong số"] == 1

    english = await client.get(
        "/v1/reports/scores", params=params, headers={"Accept-Language": "en-GB, vi;q=0.5"}
    )
    sheets = _cells(english.content)
    assert list(sheets)[:2] == ["Summary", "Province"]
    assert sheets["Team"][0][:3] == ("Code", "Name", "Parent code")


async def test_bad_round_requests_get_precise_problems_and_change_nothing(
    scoring: Any, producer: Any
) -> None:
    client, runtime = scoring
    world = await _province_with_two_teams(producer, runtime)
    province = world["province"]
    base = {"level": "province", "unit_code": province, "period": PERIOD, "due_on": "2026-12-10"}

    unknown = await client.post(
        "/v1/evaluation-rounds", json={**base, "unit_code": "NO-SUCH"}, headers=OPERATOR
    )
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["field"] == "unit_code"
    bad_period = await client.post(
        "/v1/evaluation-rounds", json={**base, "period": "2026-13"}, headers=OPERATOR
    )
    assert bad_period.status_code == 422 and "period" in bad_period.text
    no_token = await client.post("/v1/evaluation-rounds", json=base)
    assert no_token.status_code == 401
    listed = await client.get("/v1/evaluation-rounds", params={"unit_code": province})
    assert listed.json()["items"] == []

    created = await client.post("/v1/evaluation-rounds", json=base, headers=OPERATOR)
    assert created.status_code == 201
    duplicate = await client.post("/v1/evaluation-rounds", json=base, headers=OPERATOR)
    assert duplicate.status_code == 409 and created.json()["id"] in duplicate.json()["detail"]
    missing = await client.post(f"/v1/evaluation-rounds/{uuid.uuid4()}:submit", headers=OPERATOR)
    assert missing.status_code == 404
    report = await client.get(
        f"/v1/evaluation-rounds/{created.json()['id']}/report", params={"approval": 1}
    )
    assert report.status_code == 404
    outside = await client.get(
        "/v1/reports/scores",
        params={
            "level": "commune",
            "unit_code": f"{province}-C1",
            "period": PERIOD,
            "rows": "province",
        },
    )
    assert outside.status_code == 422
    listed = await client.get("/v1/evaluation-rounds", params={"unit_code": province})
    assert [r["state"] for r in listed.json()["items"]] == ["open"]


async def test_the_schedule_shows_who_approved_on_time_late_or_not_at_all(
    scoring: Any, producer: Any
) -> None:
    client, runtime = scoring
    today = datetime.now(UTC).astimezone(ZoneInfo("Asia/Ho_Chi_Minh")).date()
    yesterday, tomorrow = today - timedelta(days=1), today + timedelta(days=1)
    codes = {
        name: f"R{uuid.uuid4().hex[:6]}"
        for name in ("late", "on_time", "overdue", "pending", "missing")
    }
    units = [
        unit(code, f"Tỉnh {name}", "province", factory.path(code), None)
        for name, code in codes.items()
    ]
    await wait_processed(runtime, await produce(producer, *units))
    due = {"late": yesterday, "on_time": tomorrow, "overdue": yesterday, "pending": tomorrow}
    for name, due_on in due.items():
        opened = await client.post(
            "/v1/evaluation-rounds",
            json={"level": "province", "unit_code": codes[name], "period": "2031-Q1",
                  "due_on": due_on.isoformat()},
            headers=OPERATOR,
        )  # fmt: skip
        assert opened.status_code == 201, opened.text
        if name in ("late", "on_time"):
            for action in ("submit", "approve"):
                moved = await client.post(
                    f"/v1/evaluation-rounds/{opened.json()['id']}:{action}", headers=OPERATOR
                )
                assert moved.status_code == 200, moved.text

    reply = await client.get(
        "/v1/evaluation-rounds:schedule", params={"level": "province", "period": "2031-Q1"}
    )
    assert reply.status_code == 200, reply.text
    table = reply.json()
    mine = {
        item["unit_code"]: item for item in table["items"] if item["unit_code"] in codes.values()
    }
    assert {name: mine[code]["status"] for name, code in codes.items()} == {
        name: name for name in codes
    }
    assert mine[codes["missing"]]["round_id"] is None
    assert table["counts"]["on_time"] >= 1 and table["units"] >= len(codes)
    assert table["reporting_rate"] == round(table["counts"]["on_time"] / table["units"], 4)

    workbook = await client.get(
        "/v1/evaluation-rounds:schedule",
        params={"level": "province", "period": "2031-Q1", "format": "xlsx"},
    )
    [sheet] = _cells(workbook.content).values()
    assert sheet[2][:3] == ("Mã đơn vị", "Tên đơn vị", "Tình trạng")
    statuses = {row[0]: row[2] for row in sheet[3:]}
    assert (
        statuses[codes["late"]] == "Trễ hạn" and statuses[codes["missing"]] == "Chưa mở kỳ đánh giá"
    )


async def test_commendation_candidates_leave_out_teams_under_a_suspicious_activity_alert(
    scoring: Any, producer: Any
) -> None:
    client, runtime = scoring
    world = await _scored_province(client, producer, runtime)
    province = world["province"]
    opened = await _open_round(client, province)
    round_id = opened.json()["id"]
    params = {"min_score": 0, "min_activities": 1}
    early = await client.get(f"/v1/evaluation-rounds/{round_id}/candidates", params=params)
    assert early.status_code == 409
    for action in ("submit", "approve"):
        await client.post(f"/v1/evaluation-rounds/{round_id}:{action}", headers=OPERATOR)

    async def candidates(**extra: Any) -> list[str]:
        reply = await client.get(
            f"/v1/evaluation-rounds/{round_id}/candidates", params={**params, **extra}
        )
        assert reply.status_code == 200, reply.text
        return [item["name"] for item in reply.json()["items"]]

    both = ["Tổ CNSCĐ Ấp 1", "Tổ CNSCĐ Ấp 2"]
    assert sorted(await candidates()) == both
    assert await candidates(min_activities=2) == ["Tổ CNSCĐ Ấp 1"]

    flagged = world["teams"][1]
    alert = AlertRaised(
        id=uuid.uuid4(),
        alert_type="suspicious_activity",
        dedupe_key=f"suspicious_activity|member:{uuid.uuid4()}#visits_per_day|2026-11-20",
        subject_type="member",
        subject_id=str(uuid.uuid4()),
        status="open",
        summary="A member logged 90 household visits on 2026-11-20 (plausible: at most 40).",
        details={"check": "visits_per_day", "team_id": str(flagged)},
        raised_at=datetime.now(UTC),
    )
    await produce(producer, alert)

    async def left_out() -> bool:
        return await candidates() == ["Tổ CNSCĐ Ấp 1"]

    await eventually(left_out, timeout=20, what="the flagged team left out")
    assert sorted(await candidates(exclude_flagged="false")) == both
    workbook = _cells(await _report(client, round_id, "xlsx"))
    assert list(workbook)[-1] == "Đề xuất khen thưởng"
    assert workbook["Đề xuất khen thưởng"][0][:3] == ("Cấp", "Mã", "Tên")

    await produce(producer, alert.model_copy(update={"status": "resolved"}))

    async def back() -> bool:
        return sorted(await candidates()) == both

    await eventually(back, timeout=20, what="the team back once the alert resolved")


async def test_every_published_version_is_kept_and_old_months_expire(
    scoring: Any, producer: Any
) -> None:
    client, runtime = scoring
    province = f"H{uuid.uuid4().hex[:6]}"
    team_id = uuid.uuid4()
    place = factory.path(province, f"{province}-C1", f"{province}-C1-V1")
    await wait_processed(
        runtime, await produce(producer, factory.team(team_id=team_id, unit_path=place))
    )
    for expected in (1, 2):
        await wait_processed(
            runtime, await produce(producer, factory.activity(team_id=team_id, unit_path=place))
        )
        await _scored(client, "team", str(team_id), activities=expected)
    latest = await _scored(client, "team", str(team_id), activities=2)

    reply = await client.get(f"/v1/scores/team/{team_id}/history", params={"period": PERIOD})
    assert reply.status_code == 200, reply.text
    versions = reply.json()["items"]
    assert [v["version"] for v in versions] == sorted(
        {v["version"] for v in versions}, reverse=True
    )
    assert versions[0]["version"] == latest["version"] and versions[0]["score"] == latest["score"]
    assert [v["indicators"]["activities"] for v in versions][:1] == [2]
    assert 1 in [v["indicators"].get("activities") for v in versions]
    first_page = await client.get(
        f"/v1/scores/team/{team_id}/history", params={"period": PERIOD, "limit": 1}
    )
    rest = await client.get(
        f"/v1/scores/team/{team_id}/history",
        params={"period": PERIOD, "cursor": first_page.json()["next_cursor"]},
    )
    assert [v["version"] for v in first_page.json()["items"] + rest.json()["items"]] == [
        v["version"] for v in versions
    ]

    async with runtime.sessions() as session, session.begin():
        await session.execute(
            text(
                "CREATE TABLE scoring.score_history_200001 PARTITION OF scoring.score_history "
                "FOR VALUES FROM ('2000-01-01') TO ('2000-02-01')"
            )
        )
        await adapters.keep_score_history(session, months=24)
        parts = set(
            await session.scalars(
                text(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = 'scoring.score_history'::regclass"
                )
            )
        )
    month = datetime.now(UTC).astimezone(ZoneInfo("Asia/Ho_Chi_Minh")).strftime("%Y%m")
    assert f"score_history_{month}" in parts and "score_history_200001" not in parts


async def test_member_candidates_are_the_most_active_members_frozen_at_approval(
    scoring: Any, producer: Any
) -> None:
    client, runtime = scoring
    world = await _scored_province(client, producer, runtime)
    province, teams, places = world["province"], world["teams"], world["places"]
    busy, quiet, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    done = [
        *(
            factory.activity(
                team_id=teams[0], unit_path=places[0], member_id=busy, household_hash=f"b{i}"
            )
            for i in range(3)
        ),
        factory.activity(team_id=teams[0], unit_path=places[0], member_id=quiet),
        *(
            factory.activity(
                team_id=teams[1], unit_path=places[1], member_id=other, household_hash="o"
            )
            for _ in range(2)
        ),
    ]
    await wait_processed(runtime, await produce(producer, *done))
    round_id = (await _open_round(client, province)).json()["id"]
    url = f"/v1/evaluation-rounds/{round_id}/member-candidates"
    assert (await client.get(url)).status_code == 409  # nothing frozen before approval
    for action in ("submit", "approve"):
        moved = await client.post(f"/v1/evaluation-rounds/{round_id}:{action}", headers=OPERATOR)
        assert moved.status_code == 200, moved.text

    async def members(**params: Any) -> list[tuple[str, int, int, str]]:
        reply = await client.get(url, params=params)
        assert reply.status_code == 200, reply.text
        return [
            (m["member_id"], m["activities"], m["households"], m["team_name"])
            for m in reply.json()["items"]
        ]

    ranked = [
        (str(busy), 3, 3, "Tổ CNSCĐ Ấp 1"),
        (str(other), 2, 1, "Tổ CNSCĐ Ấp 2"),
        (str(quiet), 1, 0, "Tổ CNSCĐ Ấp 1"),
    ]
    assert await members() == ranked
    assert await members(min_activities=2) == ranked[:2]
    assert await members(top=1) == ranked[:1]

    # Later activity does not move the frozen candidates.
    late = [
        factory.activity(team_id=teams[0], unit_path=places[0], member_id=quiet) for _ in range(5)
    ]
    await wait_processed(runtime, await produce(producer, *late))
    assert await members() == ranked

    workbook = _cells(await _report(client, round_id, "xlsx"))
    sheet = workbook["Đề xuất khen thưởng"]
    member_rows = [row for row in sheet if row[0] == "Thành viên"]
    assert [(row[1], row[4], row[8]) for row in member_rows] == [
        (member, team, activities) for member, activities, _, team in ranked
    ]
    missing = await client.get(f"/v1/evaluation-rounds/{uuid.uuid4()}/member-candidates")
    assert missing.status_code == 404


async def test_a_provinces_report_never_holds_a_row_of_another_province(
    scoring: Any, producer: Any
) -> None:
    client, runtime = scoring
    mine = await _scored_province(client, producer, runtime)
    theirs = await _scored_province(client, producer, runtime)
    province = mine["province"]
    round_id = (await _open_round(client, province)).json()["id"]
    await client.post(f"/v1/evaluation-rounds/{round_id}:submit", headers=OPERATOR)
    approved = await client.post(f"/v1/evaluation-rounds/{round_id}:approve", headers=OPERATOR)
    assert approved.status_code == 200, approved.text
    live = await client.get(
        "/v1/reports/scores", params={"level": "province", "unit_code": province, "period": PERIOD}
    )
    assert live.status_code == 200, live.text
    for report in (json.loads(await _report(client, round_id, "json")), live.json()):
        items = report["items"]
        assert len(items) >= 6  # the province, its commune, two villages and two teams
        # every row is the province or lies under it (a team through its village)
        for row in items:
            place = row["parent_code"] if row["level"] == "team" else row["code"]
            assert place.startswith(province), row
            assert not place.startswith(theirs["province"]), row
        assert report["summary"]["teams"] == 2  # the totals count this province alone
