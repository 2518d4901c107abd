"""The changelog relay's records: the public contract, CloudEvents headers, a stable id."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

import orjson

from common.contracts.scoring import ScoreLatest, ScoreUpdated
from common.db import dump_json
from common.envelope import Mirror, derived_event_id
from scoring import domain, use_cases
from scoring.adapters import ChangelogRow
from scoring.use_cases.changelog import score_event_id, version_records

NOW = datetime(2026, 11, 5, 3, 0, 0, 123456, tzinfo=UTC)
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _row(*, version: int = 3, seq: int = 7, traceparent: str | None = TRACEPARENT) -> ChangelogRow:
    indicators = {"app_installs": 12.0, "teams": 2.0, "members": 9.0}
    result = domain.score(domain.DEFAULT_CRITERIA_SET, indicators, period="2026-11", targets={})
    return ChangelogRow(
        seq=seq,
        subject_type="commune",
        subject_id="82-00001",
        period="2026-11",
        criteria_set="default@1",
        version=version,
        score=result.score,
        max_score=result.max_score,
        rank=2,
        rank_of=7,
        components=dump_json(use_cases.components_json(result)),
        indicators=dump_json(indicators),
        as_of_event_time=NOW,
        computed_at=NOW,
        traceparent=traceparent,
    )


LATEST = Mirror.of(ScoreUpdated, ScoreLatest)


def test_a_version_goes_to_both_score_topics_with_the_contract_and_its_headers() -> None:
    row = _row()
    updated, latest = version_records([row], mirrors=[LATEST])
    assert (updated.topic, latest.topic) == (ScoreUpdated.TOPIC.name, ScoreLatest.TOPIC.name)
    assert updated.key == latest.key == b"commune:82-00001:2026-11"
    assert updated.value == latest.value
    wire = orjson.loads(updated.value)
    for contract in (ScoreUpdated, ScoreLatest):
        parsed = contract.model_validate(wire)
        assert parsed.version == 3 and parsed.rank == 2 and parsed.rank_of == 7
        assert parsed.computed_at == NOW and parsed.as_of_event_time == NOW
        assert len(parsed.components) == len(domain.DEFAULT_CRITERIA_SET.criteria)
    assert set(wire) == set(ScoreUpdated.model_fields)
    event_id = score_event_id(row)
    for record, contract, ce_id in (
        (updated, ScoreUpdated, event_id),
        (latest, ScoreLatest, derived_event_id(event_id, scope=ScoreLatest.TOPIC.name)),
    ):
        headers = {name: value.decode() for name, value in record.headers}
        assert headers["ce_type"] == contract.CE_TYPE
        assert headers["ce_id"] == record.event_id == str(ce_id)
        assert headers["ce_subject"] == "commune:82-00001"
        assert headers["ce_dataschema"] == contract.dataschema()
        assert headers["ce_time"] == NOW.isoformat()
        assert record.parent == (("traceparent", TRACEPARENT),)


def test_runs_of_one_trace_go_to_the_score_topic_then_to_the_mirror() -> None:
    other = "00-1bf7651916cd43dd8448eb211c80319c-c7ad6b7169203331-01"
    rows = [_row(seq=1), _row(seq=2, version=4), _row(seq=3, version=5, traceparent=other)]
    records = version_records(rows, mirrors=[LATEST])
    assert [(r.topic, r.parent[0][1]) for r in records] == [
        (ScoreUpdated.TOPIC.name, TRACEPARENT),
        (ScoreUpdated.TOPIC.name, TRACEPARENT),
        (ScoreLatest.TOPIC.name, TRACEPARENT),
        (ScoreLatest.TOPIC.name, TRACEPARENT),
        (ScoreUpdated.TOPIC.name, other),
        (ScoreLatest.TOPIC.name, other),
    ]
    versions = [orjson.loads(r.value)["version"] for r in records]
    assert versions == [3, 4, 3, 4, 5, 5]  # a key's versions in order on each topic


def test_a_version_without_a_trace_continues_none() -> None:
    [record] = version_records([_row(traceparent=None)], mirrors=[])
    assert record.parent == ()
    assert "traceparent" not in {name for name, _ in record.headers}


def test_a_version_has_one_id_whenever_it_is_sent() -> None:
    first, again, next_version = _row(), _row(seq=99), _row(version=4)
    assert score_event_id(first) == score_event_id(again)
    assert score_event_id(first) != score_event_id(next_version)
    event_id = score_event_id(first)
    assert event_id.version == 7  # a UUIDv7: consumers' dedupe records age out
    assert event_id.int >> 80 == int(NOW.timestamp() * 1000)
    assert isinstance(event_id, UUID)
