"""The changelog relay's records: the public contract, CloudEvents headers, a stable id."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

import orjson

from common.contracts.scoring import ScoreLatest, ScoreUpdated
from common.db import dump_json
from scoring import domain, use_cases
from scoring.adapters import ChangelogRow
from scoring.use_cases.changelog import outbox_rows_of, score_event_id

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


def test_a_record_carries_the_contract_and_its_headers() -> None:
    [record] = outbox_rows_of([_row()])
    assert record.topic == ScoreUpdated.TOPIC.name
    assert record.aggregateid == "commune:82-00001:2026-11"
    wire = orjson.loads(record.payload)
    for contract in (ScoreUpdated, ScoreLatest):
        parsed = contract.model_validate(wire)
        assert parsed.version == 3 and parsed.rank == 2 and parsed.rank_of == 7
        assert parsed.computed_at == NOW and parsed.as_of_event_time == NOW
        assert len(parsed.components) == len(domain.DEFAULT_CRITERIA_SET.criteria)
    assert set(wire) == set(ScoreUpdated.model_fields)
    headers = record.headers
    assert headers["ce_type"] == ScoreUpdated.CE_TYPE
    assert headers["ce_id"] == str(record.id)
    assert headers["ce_subject"] == "commune:82-00001"
    assert headers["ce_dataschema"] == ScoreUpdated.dataschema()
    assert headers["traceparent"] == TRACEPARENT


def test_a_record_without_a_trace_has_no_traceparent() -> None:
    [record] = outbox_rows_of([_row(traceparent=None)])
    assert "traceparent" not in record.headers


def test_a_version_has_one_id_whenever_it_is_sent() -> None:
    first, again, next_version = _row(), _row(seq=99), _row(version=4)
    assert score_event_id(first) == score_event_id(again)
    assert score_event_id(first) != score_event_id(next_version)
    event_id = score_event_id(first)
    assert event_id.version == 7  # a UUIDv7: consumers' dedupe records age out
    assert event_id.int >> 80 == int(NOW.timestamp() * 1000)
    assert isinstance(event_id, UUID)
