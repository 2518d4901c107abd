"""The import templates people fill in (docs/templates/, Vietnamese headers, a BOM as Excel
writes it) import as they are; errors name the column as the file calls it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.helpers import OPERATOR
from tests.integration.teams.conftest import CSV, tag, village

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
