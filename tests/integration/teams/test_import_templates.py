"""The import templates people fill in (docs/templates/, Vietnamese headers, a BOM as Excel
writes it, or the XLSX ones) import as they are; errors name the column as the file calls it;
a workbook is read like its CSV, dates typed as dates included."""

from __future__ import annotations

import io
from datetime import date, datetime
from pathlib import Path
from typing import Any

import openpyxl

from tests.helpers import OPERATOR
from tests.integration.teams.conftest import CSV, tag, village

XLSX = {
    **OPERATOR,
    "Content-Type": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}

TEMPLATES = Path(__file__).resolve().parents[3] / "docs" / "templates"
IMPORTS = (
    ("units.csv", "/v1/admin-units:import"),
    ("teams.csv", "/v1/teams:bulk"),
    ("members.csv", "/v1/members:bulk"),
)


async def test_every_template_imports_as_shipped(teams: Any) -> None:
    client, _ = teams
    for name, path in IMPORTS:
        body = (TEMPLATES / name).read_bytes()
        assert body.startswith(b"\xef\xbb\xbf"), f"{name}: Excel needs the BOM"
        reply = await client.post(path, content=body, headers=CSV)
        assert reply.status_code == 200, reply.text
        report = reply.json()
        assert report["rows"] == 1 and report["rejected"] == 0, (name, report)
    member = await client.get("/v1/members/DT-TV-MAU", headers=OPERATOR)
    assert member.status_code == 200, member.text
    assert member.json()["full_name"] == "Nguyễn Thị Mẫu" and member.json()["trained"] is True


async def test_every_xlsx_template_imports_as_shipped(teams: Any) -> None:
    client, _ = teams
    for name, path in IMPORTS:
        csv_reply = await client.post(path, content=(TEMPLATES / name).read_bytes(), headers=CSV)
        assert csv_reply.status_code == 200, csv_reply.text
        body = (TEMPLATES / name.replace(".csv", ".xlsx")).read_bytes()
        reply = await client.post(path, content=body, headers=XLSX)
        assert reply.status_code == 200, reply.text
        report = reply.json()
        assert report["rows"] == 1 and report["rejected"] == 0, (name, report)
        assert report["unchanged"] == 1, (name, report)  # the same rows as the CSV template


def workbook(*rows: tuple[object, ...]) -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


async def test_a_workbook_is_read_like_its_csv(teams: Any) -> None:
    client, _ = teams
    unit = await village(client)
    code = f"DT-{tag()}"
    body = workbook(
        ("Mã tổ", "Tên tổ", "Mã đơn vị", "Ngày thành lập", None),  # a sheet wider than its header
        (None, None, None, None, None),  # blank rows are skipped, not counted
        (code, "Tổ Hòa Bình", unit, datetime(2022, 4, 1)),  # a cell typed as a date
        (f"{code}-2", "Tổ Hòa Thạnh", unit, date(2022, 4, 2)),
        (f"{code}-3", "Tổ Hòa An", unit, 44652),  # Excel's serial number of the same day
        (f"{code}-4", "Tổ Hòa Lợi", unit, "2022-04-03", "thừa"),
    )
    reply = await client.post("/v1/teams:bulk", content=body, headers=XLSX)
    assert reply.status_code == 200, reply.text
    report = reply.json()
    assert (report["rows"], report["created"], report["rejected"]) == (4, 2, 2), report
    assert [(e["row"], e["field"]) for e in report["errors"]] == [(3, "Ngày thành lập"), (4, None)]
    team = await client.get(f"/v1/teams/{code}", headers=OPERATOR)
    assert team.status_code == 200, team.text
    assert team.json()["established_on"] == "2022-04-01"


async def test_a_body_that_is_not_a_workbook_is_refused_whole(teams: Any) -> None:
    client, _ = teams
    reply = await client.post("/v1/teams:bulk", content=b"Ma to,Ten to\n", headers=XLSX)
    assert reply.status_code == 422 and "XLSX" in reply.json()["detail"]
    headerless = await client.post("/v1/teams:bulk", content=workbook(), headers=XLSX)
    assert headerless.status_code == 422 and "header" in headerless.json()["detail"]


async def test_vietnamese_headers_in_any_case_and_errors_in_the_files_words(teams: Any) -> None:
    client, _ = teams
    unit = await village(client)
    code = f"DT-{tag()}"
    body = (
        "MÃ TỔ, tên tổ ,Mã đơn vị,Ngày thành lập\n"
        f"{code},Tổ Hòa Bình,{unit},2022-04-01\n"
        f"{code}-2,Tổ Hòa Thạnh,{unit},01/04/2022\n"
    )
    reply = await client.post("/v1/teams:bulk", content=body.encode(), headers=CSV)
    assert reply.status_code == 200, reply.text
    report = reply.json()
    assert report["created"] == 1 and report["rejected"] == 1
    assert [(e["row"], e["field"]) for e in report["errors"]] == [(2, "Ngày thành lập")]

    unknown = await client.post(
        "/v1/teams:bulk", content="Mã tổ,Màu sắc\nX,đỏ\n".encode(), headers=CSV
    )
    assert unknown.status_code == 422 and "Màu sắc" in unknown.json()["detail"]
    twice = await client.post("/v1/teams:bulk", content="Mã tổ,code\nX,Y\n".encode(), headers=CSV)
    assert twice.status_code == 422 and "Repeated" in twice.json()["detail"]
