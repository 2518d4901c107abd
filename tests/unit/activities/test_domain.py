"""Pure domain rules of the activities service."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from activities.domain import (
    ActivityIn,
    MemberView,
    RateLimiter,
    Recording,
    TeamView,
    canonical_payload,
    check_against_replica,
    decode_cursor,
    encode_cursor,
    household_hash,
    issue_key,
    key_lookup,
    key_matches,
    local_date,
    payload_hash,
    recorded_payload,
    rejection_from_validation,
)
from activities.settings import ActivitiesSettings, household_key

NOW = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
TEAM_ID = uuid.uuid4()
MEMBER_ID = uuid.uuid4()


def team(**overrides: Any) -> TeamView:
    fields: dict[str, Any] = {
        "id": TEAM_ID, "status": "active", "province": "82", "district": None,
        "commune": "82-1", "village": None, "established_on": date(2022, 4, 1),
        "dissolved_on": None,
    }  # fmt: skip
    return TeamView(**{**fields, **overrides})


def member(**overrides: Any) -> MemberView:
    fields: dict[str, Any] = {
        "id": MEMBER_ID, "team_id": TEAM_ID, "joined_on": date(2022, 4, 1), "left_on": None,
        "removed": False,
    }  # fmt: skip
    return MemberView(**{**fields, **overrides})


def event(**overrides: Any) -> ActivityIn:
    fields: dict[str, Any] = {
        "id": str(uuid.uuid4()), "team_id": str(TEAM_ID), "member_id": str(MEMBER_ID),
        "occurred_at": "2026-11-29T08:30:00+07:00", "kind": "household_visit",
        "skills": ["public_services"], "citizens_reached": 3, "outcomes": {"app_installs": 1},
    }  # fmt: skip
    return ActivityIn.model_validate({**fields, **overrides})


def reason(e: ActivityIn, **kwargs: Any) -> str | None:
    args: dict[str, Any] = {
        "team": team(), "member": member(), "provinces": ["82"], "now": NOW,
        "clock_skew": timedelta(minutes=5),
    }  # fmt: skip
    rejection = check_against_replica(e, **{**args, **kwargs})
    return rejection.reason if rejection else None


def test_valid_event_passes() -> None:
    assert reason(event()) is None
    assert reason(event(), provinces=None) is None  # operator scope
    assert reason(event(member_id=None), member=None) is None


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"team": None}, "team_unknown"),
        ({"team": team(province=None)}, "team_unit_unknown"),
        ({"provinces": ["01"]}, "team_outside_scope"),
        ({"team": team(established_on=date(2026, 12, 1))}, "before_team_established"),
        ({"team": team(status="dissolved")}, "team_dissolved"),
        ({"team": team(status="dissolved", dissolved_on=date(2026, 11, 29))}, "team_dissolved"),
        ({"team": team(status="dissolved", dissolved_on=date(2026, 11, 30))}, None),
        ({"member": None}, "member_unknown"),
        ({"member": member(removed=True)}, "member_unknown"),
        ({"member": member(team_id=uuid.uuid4())}, "member_not_in_team"),
        ({"member": member(joined_on=date(2026, 11, 30))}, "member_not_in_team_at_occurred_at"),
        ({"member": member(left_on=date(2026, 11, 29))}, "member_not_in_team_at_occurred_at"),
        ({"member": member(left_on=date(2026, 11, 30))}, None),
        ({"member": member(joined_on=date(2026, 11, 29))}, None),
    ],
)
def test_replica_rules(kwargs: dict[str, Any], expected: str | None) -> None:
    assert reason(event(), **kwargs) == expected


def test_future_beyond_skew_rejected_within_skew_accepted() -> None:
    assert reason(event(occurred_at=(NOW + timedelta(minutes=4)).isoformat())) is None
    assert reason(event(occurred_at=(NOW + timedelta(minutes=6)).isoformat())) == (
        "occurred_in_future"
    )


def test_dates_are_compared_on_the_vietnamese_calendar() -> None:
    late_evening_utc = datetime(2026, 11, 28, 18, 30, tzinfo=UTC)  # 01:30 on the 29th in VN
    assert local_date(late_evening_utc) == date(2026, 11, 29)
    e = event(occurred_at=late_evening_utc.isoformat())
    assert reason(e, member=member(joined_on=date(2026, 11, 29))) is None


def test_household_visit_citizens_bounded() -> None:
    assert reason(event(citizens_reached=50)) is None
    assert reason(event(citizens_reached=51)) == "count_out_of_range"
    assert reason(event(kind="group_session", citizens_reached=500)) is None


@pytest.mark.parametrize(
    ("overrides", "expected", "field"),
    [
        ({"occurred_at": "2026-11-29T08:30:00"}, "naive_timestamp", "occurred_at"),
        ({"colour": "red"}, "unknown_field", "colour"),
        ({"skills": ["juggling"]}, "unknown_skill", "skills.0"),
        ({"outcomes": {"likes": 1}}, "unknown_outcome", "outcomes.likes.[key]"),
        ({"outcomes": {"app_installs": -1}}, "count_out_of_range", "outcomes.app_installs"),
        ({"citizens_reached": 10_001}, "count_out_of_range", "citizens_reached"),
        ({"citizens_reached": "3"}, "invalid", "citizens_reached"),
        ({"citizens_reached": True}, "invalid", "citizens_reached"),
        ({"kind": "party"}, "invalid", "kind"),
        ({"team_id": "x"}, "invalid", "team_id"),
    ],
)
def test_schema_errors_name_a_reason_and_the_field(
    overrides: dict[str, Any], expected: str, field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        event(**overrides)
    rejection = rejection_from_validation(caught.value)
    assert rejection.reason == expected
    assert rejection.errors[0]["field"] == field
    assert "input" not in rejection.errors[0]


def test_payload_hash_ignores_spelling_but_not_meaning() -> None:
    base = event(skills=["public_services", "online_payment"], audience=["elderly", "traders"])
    same = ActivityIn.model_validate(
        {
            **base.model_dump(mode="json"),
            "occurred_at": "2026-11-29T01:30:00Z",
            "skills": ["online_payment", "public_services"],
            "audience": ["traders", "elderly"],
            "outcomes": {"app_installs": 1, "ewallet_accounts": 0},
        }
    )
    other = base.model_copy(update={"citizens_reached": 4})

    def digest(e: ActivityIn) -> bytes:
        return payload_hash(canonical_payload(e, household=None))

    assert digest(base) == digest(same)
    assert digest(base) != digest(other)
    assert payload_hash(canonical_payload(base, household="a")) != digest(base)


def test_household_hash_is_keyed() -> None:
    one = household_hash("HH-1", key=b"k" * 32)
    assert one == household_hash("HH-1", key=b"k" * 32)
    assert one != household_hash("HH-1", key=b"j" * 32)
    assert one is not None and "HH-1" not in one and len(one) == 64
    assert household_hash(None, key=b"k" * 32) is None


def test_keys_issued_parsed_and_compared() -> None:
    issued = issue_key()
    assert key_lookup(issued.api_key) == issued.lookup
    assert key_matches(issued.api_key, issued.digest)
    assert not key_matches(issued.api_key + "x", issued.digest)
    assert issue_key().api_key != issued.api_key
    for malformed in ("", "cdtp", "cdtp_zz_secret", "abcd_0123456789ab_" + "x" * 40,
                      "cdtp_0123456789ab_short"):  # fmt: skip
        assert key_lookup(malformed) is None


def test_token_bucket_allows_bursts_then_asks_to_wait() -> None:
    limiter = RateLimiter()
    partner = uuid.uuid4()
    assert [limiter.check(partner, rate=2, now=100.0) for _ in range(3)] == [0, 0, 1]
    assert limiter.check(partner, rate=2, now=100.6) == 0  # refilled 1.2 tokens
    assert limiter.check(uuid.uuid4(), rate=2, now=100.6) == 0  # other keys unaffected
    assert limiter.check(partner, rate=0.25, now=100.6) == 4  # 0.2 left, 0.8 to go at 0.25/s


def test_cursor_round_trip_and_garbage() -> None:
    moment, ident = datetime(2026, 3, 1, 2, 0, tzinfo=UTC), uuid.uuid4()
    assert decode_cursor(encode_cursor(moment, ident)) == (moment, ident)
    assert decode_cursor("nope") is None
    assert decode_cursor(encode_cursor(moment, ident)[:-3]) is None


def test_household_key_configured_or_generated_outside_prod() -> None:
    configured = ActivitiesSettings(CDT_HOUSEHOLD_HMAC_KEY="x" * 32)  # type: ignore[call-arg]
    assert household_key(configured) == b"x" * 32
    dev = ActivitiesSettings(CDT_ENV="dev")  # type: ignore[call-arg]
    assert household_key(dev) == household_key(dev) and len(household_key(dev)) == 32
    with pytest.raises(ValueError, match="required in prod"):
        household_key(ActivitiesSettings(CDT_ENV="prod"))  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="at least 16"):
        household_key(ActivitiesSettings(CDT_HOUSEHOLD_HMAC_KEY="short"))  # type: ignore[call-arg]


def test_recorded_payload_is_the_activity_recorded_contract() -> None:
    from common.contracts.activities import ActivityRecorded
    from common.contracts.teams import UnitPath

    e = event(skills=["online_payment", "public_services"], household_ref="HH-1",
              audience=["elderly"], campaign_id="c-1",
              outcomes={"app_installs": 2, "ewallet_accounts": 0})  # fmt: skip
    partner_id = uuid.uuid4()
    canonical = canonical_payload(e, household="h" * 64)
    recording = Recording.of(partner_id=partner_id, recorded_at=NOW)
    payload = recorded_payload(e, canonical=canonical, team=team(), recording=recording)
    expected = ActivityRecorded(
        id=e.id, team_id=TEAM_ID, member_id=MEMBER_ID, partner_id=partner_id,
        occurred_at=e.occurred_at, recorded_at=NOW, kind="household_visit",
        skills=["online_payment", "public_services"], citizens_reached=3,
        household_hash="h" * 64, audience=["elderly"], campaign_id="c-1",
        outcomes={"app_installs": 2}, unit_path=UnitPath(province="82", commune="82-1"),
    )  # fmt: skip
    assert ActivityRecorded.model_validate(payload) == expected
    assert set(payload) == set(ActivityRecorded.model_fields)
    assert "household_ref" not in payload


def test_partner_version_is_exact_microseconds_and_grows() -> None:
    from datetime import UTC, datetime, timedelta

    from activities.domain import partner_version

    at = datetime(2026, 11, 29, 23, 40, 0, 123456, tzinfo=UTC)
    whole_seconds = int(at.replace(microsecond=0).timestamp())
    assert partner_version(at) == whole_seconds * 1_000_000 + 123_456
    assert partner_version(datetime(1970, 1, 1, tzinfo=UTC)) == 0
    assert partner_version(at + timedelta(microseconds=1)) == partner_version(at) + 1


# ---- payload hash: orjson spells the canonical JSON as json.dumps did ----------------------

_texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
_canonical = st.fixed_dictionaries(
    {
        "id": _texts,
        "team_id": _texts,
        "member_id": st.none() | _texts,
        "occurred_at": _texts,
        "kind": _texts,
        "skills": st.lists(_texts, max_size=5),
        "citizens_reached": st.integers(min_value=-(2**63), max_value=2**63 - 1),
        "household_hash": st.none() | _texts,
        "audience": st.lists(_texts, max_size=4),
        "campaign_id": st.none() | _texts,
        "outcomes": st.dictionaries(_texts, st.integers(min_value=0, max_value=10**9)),
    }
)


@given(_canonical)
def test_payload_hash_matches_the_json_dumps_spelling(canonical: dict[str, object]) -> None:
    """Hashes stored by earlier versions (json.dumps) must still match: a retried event stays a
    duplicate, not a conflict, across the switch to orjson."""
    spelled = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert payload_hash(canonical) == hashlib.sha256(spelled.encode()).digest()


def test_payload_hash_of_a_real_event_matches_the_json_dumps_spelling() -> None:
    e = event(skills=["online_payment"], audience=["elderly"])
    e = e.model_copy(update={"outcomes": {"app_installs": 2, "ewallet_accounts": 1}})
    canonical = canonical_payload(e, household="ab" * 32)
    spelled = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert payload_hash(canonical) == hashlib.sha256(spelled.encode()).digest()
