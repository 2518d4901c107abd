"""Names found the way a Vietnamese reader types them: words in order, case and diacritics aside,
NFD or NFC, "đ" as "d"; on units, teams and members, within a subtree, paged."""

from __future__ import annotations

import unicodedata
import uuid
from typing import Any

from tests.helpers import OPERATOR
from tests.integration.teams.conftest import MY_THO, member, tag, team, village


async def test_names_are_found_without_case_or_diacritics(teams: Any) -> None:
    client, _ = teams
    word = f"Đồng{tag().lower()}"  # unique in the database, with an đ and diacritics
    unit = await village(client)
    found_team = await team(client, unit, name=f"Tổ CNSCĐ {word} Hòa Bình")
    other = await team(client, unit, name=f"Tổ {word} Tân Phú")
    people = [
        await member(client, found_team["id"], full_name=f"Lê Thị {word} Hòa"),
        await member(client, other["id"], full_name=f"Trần Văn {word} Bình"),
    ]
    plain = word.replace("Đồng", "dong")

    async def names(path: str, q: str, **params: Any) -> list[str]:
        reply = await client.get(path, params={"q": q, **params}, headers=OPERATOR)
        assert reply.status_code == 200, reply.text
        field = "full_name" if path == "/v1/members" else "name"
        # current units only: the retired ones of the legacy import may share the database
        items = [item for item in reply.json()["items"] if item.get("valid_to") is None]
        return sorted(item[field] for item in items)

    for q in (
        f"{plain} hoa binh",
        f"{word.upper()} HÒA BÌNH",
        unicodedata.normalize("NFD", f"{word} hòa"),
    ):
        assert await names("/v1/teams", q) == [found_team["name"]], q
    assert await names("/v1/teams", plain) == sorted([found_team["name"], other["name"]])
    assert await names("/v1/teams", plain, unit=MY_THO) == sorted(
        [found_team["name"], other["name"]]
    )
    assert await names("/v1/teams", plain, unit="79") == []  # another province's subtree
    assert await names("/v1/members", f"{plain}  hoa") == [people[0]["full_name"]]
    assert await names("/v1/members", f"tran van {plain}") == [people[1]["full_name"]]
    # the words in their order, others between: family and given name without the middle one
    assert await names("/v1/members", f"le {plain} hoa") == [people[0]["full_name"]]
    assert await names("/v1/members", f"hoa {plain} le") == []
    assert await names("/v1/members", plain, unit=unit) == sorted(p["full_name"] for p in people)
    # a substring: "Mỹ Tho" is in "Mỹ Thới" too
    assert await names("/v1/admin-units", "phuong my tho") == ["Phường Mỹ Tho", "Phường Mỹ Thới"]
    assert await names("/v1/admin-units", "dong thap", level="province") == ["Đồng Tháp"]

    first = await client.get("/v1/members", params={"q": plain, "limit": 1}, headers=OPERATOR)
    rest = await client.get(
        "/v1/members",
        params={"q": plain, "limit": 1, "cursor": first.json()["next_cursor"]},
        headers=OPERATOR,
    )
    paged = [*first.json()["items"], *rest.json()["items"]]
    assert sorted(p["id"] for p in paged) == sorted(p["id"] for p in people)
    assert rest.json()["next_cursor"] is None


async def test_searches_are_bounded_and_wildcards_are_literal(teams: Any) -> None:
    client, _ = teams
    unit = await village(client)
    marker = tag().lower()
    await team(client, unit, name=f"Tổ 100% {marker}")
    await team(client, unit, name=f"Tổ 1000 {marker}")

    async def search(q: str, path: str = "/v1/teams") -> Any:
        return await client.get(path, params={"q": q}, headers=OPERATOR)

    literal = await search(f"100% {marker}")
    assert [t["name"] for t in literal.json()["items"]] == [f"Tổ 100% {marker}"]
    underscore = await search(f"1_0 {marker}")
    assert underscore.json()["items"] == []
    for bad in ("a", "x" * 101, "tổ\u0000"):
        reply = await search(bad)
        assert reply.status_code == 422, bad
        assert [e["field"] for e in reply.json()["errors"]] == ["query.q"], reply.json()
    missing = await client.get("/v1/members", headers=OPERATOR)
    assert missing.status_code == 422 and missing.json()["errors"][0]["field"] == "query.q"
    anonymous = await client.get("/v1/members", params={"q": "nguyen"})
    assert anonymous.status_code == 401
    unknown = await client.get(
        "/v1/members",
        params={"q": "nguyen", "unit": f"NO-{uuid.uuid4().hex[:6]}"},
        headers=OPERATOR,
    )
    assert unknown.status_code == 404


async def test_lists_sort_by_name_in_vietnamese_order_page_by_page(teams: Any) -> None:
    """a < ă < â, d < đ: an order byte order and the root collation both get wrong."""
    client, _ = teams
    unit = await village(client)
    marker = f"S{tag().lower()}"
    vietnamese_order = ["Anh", "Ăn", "Ân", "Bình", "Dũng", "Đào", "Ô Môn", "Ơn"]
    for given in reversed(vietnamese_order):
        created = await team(client, unit, name=f"{marker} {given}")
        await member(client, created["id"], full_name=f"{marker} {given}")

    async def walk(path: str, field: str) -> list[str]:
        names: list[str] = []
        cursor = None
        while True:
            params = {
                "q": marker,
                "sort": "name",
                "limit": 3,
                **({"cursor": cursor} if cursor else {}),
            }
            reply = await client.get(path, params=params, headers=OPERATOR)
            assert reply.status_code == 200, reply.text
            names += [item[field].removeprefix(f"{marker} ") for item in reply.json()["items"]]
            cursor = reply.json()["next_cursor"]
            if cursor is None:
                return names

    assert await walk("/v1/teams", "name") == vietnamese_order
    assert await walk("/v1/members", "full_name") == vietnamese_order
    by_id = await client.get(
        "/v1/teams", params={"q": marker, "limit": 3, "sort": "name"}, headers=OPERATOR
    )
    other_sort = await client.get(
        "/v1/teams",
        params={"q": marker, "cursor": by_id.json()["next_cursor"]},  # a name cursor, id sort
        headers=OPERATOR,
    )
    assert other_sort.status_code == 400
    provinces = await client.get(
        "/v1/admin-units",
        params={"level": "province", "sort": "name", "limit": 40},
        headers=OPERATOR,
    )
    names = [unit["name"] for unit in provinces.json()["items"]]
    # the 34 provinces: đ between d and e (byte order puts it after z), a tone after letters
    expected = ["Cà Mau", "Cao Bằng", "Đắk Lắk", "Điện Biên", "Đồng Nai", "Đồng Tháp", "Gia Lai"]
    assert [name for name in names if name in expected] == expected
