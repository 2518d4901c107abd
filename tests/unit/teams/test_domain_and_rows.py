"""Pure rules of the registry and the streamed CSV / NDJSON reader (no I/O)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import date

import pytest
from pydantic import ValidationError

from teams.domain import (
    AdminUnit,
    DomainError,
    Member,
    SizeBounds,
    Team,
    check_no_cycle,
    check_parent,
    check_team_unit,
    duplicates,
    mask_phone,
    retirement_date,
    team_health,
    unit_path_of,
)
from teams.rows import (
    BodyFormatError,
    ColumnSet,
    MemberRow,
    RecordParser,
    RecordSplitter,
    TeamRow,
    media_kind,
    raw_records,
    row_errors,
)
from teams.units_source import current_units


def unit(code: str, level: str, path: str, valid_to: date | None = None) -> AdminUnit:
    return AdminUnit(
        code=code,
        name=code,
        level=level,  # type: ignore[arg-type]
        parent_code=None,
        path=path,
        valid_from=None,
        valid_to=valid_to,
        replaced_by=("X",) if valid_to else (),
        version=1,
    )


def team() -> Team:
    return Team.establish(
        code="T1", name="t", unit_code="V1", established_on=date(2022, 4, 1), decision_no=None
    )


def test_parent_levels_follow_both_hierarchies() -> None:
    check_parent(level="province", parent_level=None)
    check_parent(level="commune", parent_level="province")  # two tiers, since 2025
    check_parent(level="commune", parent_level="district")  # three tiers, before
    check_parent(level="village", parent_level="commune")
    for level, parent in (("village", "province"), ("district", None), ("province", "commune")):
        with pytest.raises(DomainError) as err:
            check_parent(level=level, parent_level=parent)
        assert err.value.field == "parent_code"


def test_cycle_is_a_conflict() -> None:
    check_no_cycle(unit_code="A", new_parent_path="82/B")
    with pytest.raises(DomainError) as err:
        check_no_cycle(unit_code="B", new_parent_path="82/B/C")
    assert err.value.conflict


def test_unit_path_names_each_level() -> None:
    levels = {"82": "province", "28261": "commune", "V1": "village"}
    path = unit_path_of("82/28261/V1", levels)
    assert (path.province, path.district, path.commune, path.village) == (
        "82",
        None,
        "28261",
        "V1",
    )


def test_team_unit_must_be_current_village_or_commune() -> None:
    today = date(2026, 1, 1)
    assert check_team_unit(unit("V1", "village", "82/C/V1"), code="V1", today=today)
    for candidate, message in (
        (None, "Unknown unit"),
        (unit("82", "province", "82"), "not a province"),
        (unit("V0", "village", "82/C/V0", valid_to=date(2025, 6, 30)), "replaced"),
    ):
        with pytest.raises(DomainError, match=message) as err:
            check_team_unit(candidate, code="x", today=today)
        assert err.value.field == "unit_code"
    assert retirement_date(date(2025, 7, 1)) == date(2025, 6, 30)


def test_health_reports_but_never_rejects() -> None:
    bounds = SizeBounds(minimum=4, maximum=9)
    assert team_health(size=5, leaders=1, trained=2, bounds=bounds).ok
    small = team_health(size=2, leaders=0, trained=0, bounds=bounds)
    assert small.issues == ("too_few_members", "no_leader", "no_trained_member")
    big = team_health(size=10, leaders=2, trained=1, bounds=bounds)
    assert big.issues == ("too_many_members", "several_leaders")


def test_dissolved_team_takes_no_members_and_dissolves_once() -> None:
    dissolved = team().dissolve(on=date(2024, 1, 1))
    assert dissolved.status == "dissolved" and dissolved.version == 2
    with pytest.raises(DomainError) as err:
        Member.join(
            team=dissolved,
            code=None,
            full_name="A",
            role="member",
            affiliation="other",
            enterprise_name=None,
            phone=None,
            joined_on=date(2024, 2, 1),
            left_on=None,
        )
    assert err.value.conflict
    with pytest.raises(DomainError):
        dissolved.dissolve(on=date(2024, 1, 2))
    with pytest.raises(DomainError):
        team().dissolve(on=date(2020, 1, 1))  # before it was established


def test_member_event_never_carries_the_phone() -> None:
    member = Member.join(
        team=team(),
        code="M1",
        full_name="A",
        role="leader",
        affiliation="area_police",
        enterprise_name=None,
        phone="0912345678",
        joined_on=date(2022, 4, 1),
        left_on=None,
    )
    payload = member.changed_event().model_dump_json()
    assert "0912345678" not in payload and "phone" not in json.loads(payload)
    assert member.trained_now().changed_event().trained
    assert member.revised(role="leader") is member  # no-op keeps the version
    with pytest.raises(DomainError):
        member.revised(left_on=date(2020, 1, 1))


def test_mask_phone() -> None:
    assert mask_phone("0912345678") == "091*****78"
    assert mask_phone("123") == "***"
    assert mask_phone(None) is None


def test_duplicates_point_at_first_occurrence() -> None:
    assert duplicates(["a", "b", "a", "a"]) == {2: 0, 3: 0}


def test_package_units_are_34_provinces_and_3321_communes() -> None:
    units = current_units()
    provinces = [u for u in units if u["level"] == "province"]
    assert len(provinces) == 34 and len(units) - 34 == 3321
    assert {"code": "82", "name": "Đồng Tháp"}.items() <= provinces[
        [p["code"] for p in provinces].index("82")
    ].items()
    seen: set[str] = set()
    for u in units:  # parents precede children
        assert u["parent_code"] is None or u["parent_code"] in seen
        seen.add(u["code"])


# --- streamed rows --------------------------------------------------------------------------


def split_all(data: bytes, *, csv_quotes: bool, size: int) -> list[str | None]:
    splitter = RecordSplitter(csv_quotes=csv_quotes, max_chars=40)
    out: list[str | None] = []
    for i in range(0, len(data), size):
        out += splitter.feed(data[i : i + size])
    out += splitter.finish()
    return out


@pytest.mark.parametrize("size", [1, 3, 7, 1000])
def test_splitter_handles_chunk_boundaries_quotes_and_utf8(size: int) -> None:
    data = '\ufeffcode,name\r\nA,"Ấp\n1"\nB,"say ""hi"""\nC,Tổ'.encode()
    assert split_all(data, csv_quotes=True, size=size) == [
        "code,name",
        'A,"Ấp\n1"',
        'B,"say ""hi"""',
        "C,Tổ",
    ]


def test_splitter_drops_overlong_records_but_keeps_going() -> None:
    data = ("a\n" + "x" * 100 + "\nb\n").encode()
    assert split_all(data, csv_quotes=False, size=10) == ["a", None, "b"]


def test_parser_numbers_rows_and_reports_malformed_ones() -> None:
    parser = RecordParser("csv", columns=ColumnSet(frozenset({"code", "name"})))
    parsed = [parser.parse(r) for r in ["code,name", "A,x", "", "B", 'C,"x', None]]
    rows = [p for p in parsed if p is not None]
    assert [(r.row, r.data, r.error is not None) for r in rows] == [
        (1, {"code": "A", "name": "x"}, False),
        (2, None, True),
        (3, None, True),
        (4, None, True),
    ]
    with pytest.raises(BodyFormatError, match="colour"):
        RecordParser("csv", columns=ColumnSet(frozenset({"code"}))).parse("code,colour")
    ndjson = RecordParser("ndjson", columns=ColumnSet(frozenset()))
    assert ndjson.parse('{"a": 1}').data == {"a": 1}  # type: ignore[union-attr]
    assert ndjson.parse("[1]").error == "Each line must be a JSON object."  # type: ignore[union-attr]


def test_media_kind() -> None:
    assert media_kind("text/csv; charset=utf-8") == "csv"
    assert media_kind("application/x-ndjson") == "ndjson"
    with pytest.raises(BodyFormatError):
        media_kind("application/json")


async def test_raw_records_streams() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"code": "A"}\n{"co'
        yield b'de": "B"}\n'

    rows = [r async for r in raw_records(chunks(), kind="ndjson", columns=ColumnSet(frozenset()))]
    assert [r.data for r in rows] == [{"code": "A"}, {"code": "B"}]


def test_row_schemas_coerce_csv_cells_and_name_bad_fields() -> None:
    row = MemberRow.model_validate(
        {
            "code": "M1",
            "team_code": "T1",
            "full_name": "A",
            "role": "leader",
            "affiliation": "teacher",
            "phone": "0912 345.678",
            "joined_on": "2022-04-01",
            "left_on": "",
            "enterprise_name": "",
        }
    )
    assert row.phone == "0912345678" and row.left_on is None and row.enterprise_name is None
    with pytest.raises(ValidationError) as exc:
        TeamRow.model_validate({"code": "bad code", "name": "", "unit_code": "V1"})
    errors = row_errors(7, exc.value)
    assert {(e.row, e.field) for e in errors} == {(7, "code"), (7, "name")}
    with pytest.raises(ValidationError) as exc:
        MemberRow.model_validate(
            {"code": "M", "team_code": "T", "full_name": "A", "phone": "12", "joined_on": "x"}
        )
    assert "12" not in str([e.message for e in row_errors(1, exc.value)])


def test_reorganisation_keeps_the_strongest_change_and_latest_team() -> None:
    from teams.use_cases import Reorganisation

    plan = Reorganisation()
    plan.mark(["V1", "V2"], "updated")
    plan.mark(["V1"], "reparented")
    plan.mark(["V1"], "updated")
    assert plan.changes == {"V1": "reparented", "V2": "updated"}
    first = team()
    plan.add_teams([first.renamed("b"), first])
    assert plan.teams[first.id].version == 2


def test_cursor_round_trip_and_rejects_garbage() -> None:
    from common.problems import ProblemError
    from teams.api_common import decode_cursor, encode_cursor

    assert decode_cursor(encode_cursor("28261")) == "28261"
    assert decode_cursor(None) is None
    with pytest.raises(ProblemError):
        decode_cursor("%%%")


# --- partner reads --------------------------------------------------------------------------


def test_partner_key_lookup_accepts_only_well_formed_keys() -> None:
    from teams.domain import partner_key_lookup

    secret = "s" * 43
    assert partner_key_lookup(f"cdtp_0123456789ab_{secret}") == "0123456789ab"
    for bad in (
        f"cdtp_0123456789AB_{secret}",  # upper-case hex is not what activities issues
        f"cdtp_0123456789a_{secret}",
        f"xxxx_0123456789ab_{secret}",
        "cdtp_0123456789ab_short",
        "operator-token",
        "",
    ):
        assert partner_key_lookup(bad) is None, bad


def test_partner_key_matches_the_replicated_digest_only() -> None:
    import hashlib

    from teams.domain import partner_key_matches

    key = "cdtp_0123456789ab_" + "k" * 43
    digest = hashlib.sha256(key.encode()).hexdigest()
    assert partner_key_matches(key, key_sha256=digest)
    assert partner_key_matches(key, key_sha256=digest.upper())
    assert not partner_key_matches(key + "x", key_sha256=digest)
    assert not partner_key_matches(key, key_sha256="")


def test_a_reader_sees_the_units_whose_path_passes_through_their_scope() -> None:
    from common.roles import NATIONWIDE, Scope
    from teams.domain import Reader

    partner = Reader(Scope(frozenset({"82"})))
    assert partner.may_see("82/28261") and partner.may_see("82")
    assert not partner.may_see("01/00070") and not partner.may_see("820/1")
    commune = Reader(Scope(frozenset({"28261"})))
    assert commune.may_see("82/28261/28261-V01") and commune.may_see("82/28261")
    assert not commune.may_see("82") and not commune.may_see("82/28262")
    assert Reader(NATIONWIDE).may_see("01/00070")


def test_a_malformed_csv_header_is_a_body_error_not_a_crash() -> None:
    # Found by schemathesis: a stray carriage return inside the header line.
    parser = RecordParser("csv", columns=frozenset({"code", "team_code"}))
    with pytest.raises(BodyFormatError, match="Malformed CSV header"):
        parser.parse("¶\udca3\r\x85>")
    with pytest.raises(BodyFormatError, match="Malformed CSV header"):
        parser.parse('code,"team_code')
