from __future__ import annotations

import json
from datetime import UTC, datetime
from uuid import RFC_4122, uuid4

import pytest
from uuid_utils.compat import uuid7

from common.contracts.scoring import ScoreLatest, ScoreUpdated
from common.contracts.teams import TeamChanged
from common.contracts.wire import TeamChangedWire, parse_wire
from common.envelope import (
    Mirror,
    OutboundEvent,
    PoisonRecordError,
    decode_record,
    derived_event_id,
    kafka_headers,
)


def team_changed() -> TeamChanged:
    return TeamChanged(
        id=uuid4(),
        code="DT-1",
        name="Tổ 1",
        unit_code="82",
        status="active",
        version=3,
        changed_at=datetime(2026, 11, 29, tzinfo=UTC),
    )


def test_outbound_event_round_trips_through_kafka_headers() -> None:
    contract = team_changed()
    event = OutboundEvent.of(contract, source="/cdt/teams", subject=str(contract.id))
    headers = kafka_headers(
        {**event.ce_headers(), "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}
    )
    inbound = decode_record(
        topic=event.topic,
        partition=2,
        offset=7,
        key=event.key.encode(),
        value=json.dumps(event.data).encode(),
        headers=headers,
    )
    assert inbound.id == event.id
    assert inbound.type == "vn.cdt.teams.team.v1"
    assert inbound.subject == str(contract.id)
    assert inbound.trace_headers["traceparent"].startswith("00-aaaa")
    assert inbound.parse(TeamChanged) == contract
    assert event.topic == "teams.team.v1" and event.key == str(contract.id)


def test_unknown_fields_from_newer_producers_are_ignored() -> None:
    data = {**team_changed().model_dump(mode="json"), "added_in_v1_1": True}
    headers = [("ce_id", str(uuid4()).encode()), ("ce_type", b"vn.cdt.teams.team.v1")]
    inbound = decode_record(
        topic="t", partition=0, offset=0, key=None, value=json.dumps(data).encode(), headers=headers
    )
    assert inbound.parse(TeamChanged).code == "DT-1"


@pytest.mark.parametrize(
    ("value", "headers", "reason"),
    [
        (b"{}", [], "not a CloudEvent"),
        (b"{}", [("ce_id", b"not-a-uuid"), ("ce_type", b"x")], "not a CloudEvent"),
        (None, [("ce_id", str(uuid4()).encode()), ("ce_type", b"x")], "no value"),
    ],
)
def test_undecodable_records_are_poison(
    value: bytes | None, headers: list[tuple[str, bytes]], reason: str
) -> None:
    with pytest.raises(PoisonRecordError, match=reason):
        decode_record(topic="t", partition=0, offset=1, key=None, value=value, headers=headers)


@pytest.mark.parametrize(
    ("value", "reason"), [(b"{oops", "not JSON"), (b"[1, 2]", "not a JSON object")]
)
def test_a_value_that_is_no_json_object_is_poison_when_read(value: bytes, reason: str) -> None:
    headers = [("ce_id", str(uuid4()).encode()), ("ce_type", b"vn.cdt.teams.team.v1")]
    inbound = decode_record(
        topic="t", partition=0, offset=1, key=None, value=value, headers=headers
    )
    with pytest.raises(PoisonRecordError, match=reason):
        inbound.parse(TeamChanged)
    with pytest.raises(PoisonRecordError, match=reason.rsplit(maxsplit=1)[-1]):
        parse_wire(inbound, TeamChangedWire)


def test_invalid_data_is_poison() -> None:
    headers = [("ce_id", str(uuid4()).encode()), ("ce_type", b"vn.cdt.teams.team.v1")]
    inbound = decode_record(
        topic="t", partition=0, offset=0, key=None, value=b'{"code": 1}', headers=headers
    )
    with pytest.raises(PoisonRecordError, match="invalid data"):
        inbound.parse(TeamChanged)


def test_a_derived_event_id_is_stable_per_scope_and_a_uuid7_of_the_same_millisecond() -> None:
    source = OutboundEvent.of(team_changed(), source="/cdt/teams").id
    derived = derived_event_id(source, scope="scoring.score-latest.v1")
    assert derived == derived_event_id(source, scope="scoring.score-latest.v1")  # redelivery
    assert derived not in {source, derived_event_id(source, scope="other.topic.v1")}
    assert derived.version == 7 and derived.variant == RFC_4122
    assert derived.int >> 80 == source.int >> 80  # the same creation time: pruned alike
    many = {derived_event_id(uuid7(), scope="t") for _ in range(1_000)}
    assert len(many) == 1_000


def test_a_mirror_retypes_the_event_under_its_derived_id() -> None:
    event = OutboundEvent.of_payload(
        ScoreUpdated, {"score": 1}, key="team:t:2026-11", source="/cdt/scoring", subject="team:t"
    )
    mirror = Mirror.of(ScoreUpdated, ScoreLatest)
    assert (mirror.source, mirror.topic) == (ScoreUpdated.TOPIC.name, ScoreLatest.TOPIC.name)
    mirrored_id, headers = mirror.headers(event.id, {**event.ce_headers(), "traceparent": "tp"})
    assert mirrored_id == derived_event_id(event.id, scope=ScoreLatest.TOPIC.name)
    assert headers == {
        **event.ce_headers(),
        "traceparent": "tp",
        "ce_id": str(mirrored_id),
        "ce_type": ScoreLatest.CE_TYPE,
        "ce_dataschema": ScoreLatest.dataschema(),
    }
