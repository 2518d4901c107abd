"""The publisher builds score payloads as plain data for speed: they must match the contract."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from common.contracts.scoring import ScoreLatest, ScoreUpdated
from common.db import dump_json, json_once
from scoring import domain, use_cases
from scoring.domain import SubjectPeriod


@pytest.mark.parametrize("serialized_once", [False, True], ids=["plain", "json_once"])
def test_score_payload_validates_against_the_public_contract(serialized_once: bool) -> None:
    indicators = {"app_installs": 12.0, "teams": 2.0, "members": 9.0, "w:2026-W40": 3.0}
    visible = domain.visible_indicators(indicators)
    result = domain.score(domain.DEFAULT_CRITERIA_SET, visible, period="2026-10", targets={})
    now = datetime(2026, 10, 5, 3, 0, tzinfo=UTC)
    components = use_cases.components_json(result)
    payload = use_cases.score_payload(
        key=SubjectPeriod("commune", "82-00001", "2026-10"),
        criteria_set="default@1",
        score=result.score,
        max_score=result.max_score,
        # the publisher serializes them once, for the stored score and for the event
        components=json_once(components) if serialized_once else components,
        indicators=json_once(visible) if serialized_once else visible,
        rank=(2, 7),
        version=3,
        as_of=now,
        computed_at=now,
    )
    wire = orjson.loads(dump_json(payload))  # what the outbox stores and the relay sends
    for contract in (ScoreUpdated, ScoreLatest):
        parsed = contract.model_validate(wire)
        assert parsed.event_key() == "commune:82-00001:2026-10"
        assert parsed.rank == 2 and parsed.rank_of == 7 and parsed.as_of_event_time == now
        assert len(parsed.components) == len(domain.DEFAULT_CRITERIA_SET.criteria)
    assert set(wire) == set(ScoreUpdated.model_fields)
    assert visible["active_weeks"] == 1 and not any(k.startswith("w:") for k in wire["indicators"])
    assert wire["components"] == components and wire["indicators"] == visible
