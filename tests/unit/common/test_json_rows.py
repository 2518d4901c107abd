"""`common.db.json_rows`: bulk statement parameters as one JSON document."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import NamedTuple

from common.db import dump_json, json_rows


class Key(NamedTuple):
    subject_type: str
    subject_id: str
    period: str


def test_typed_keys_are_arrays_not_their_repr() -> None:
    keys = [Key("team", "t-1", "2026-05"), Key("province", "82", "2026")]
    assert json.loads(json_rows(keys)) == [["team", "t-1", "2026-05"], ["province", "82", "2026"]]
    assert json.loads(dump_json({"key": keys[0]})) == {"key": ["team", "t-1", "2026-05"]}


def test_uuids_and_instants_travel_as_text_postgresql_casts() -> None:
    moment = datetime(2026, 12, 4, 18, 0, tzinfo=UTC)
    row = json.loads(json_rows([(uuid.UUID(int=7), moment, None, 1.5)]))[0]
    assert row == [str(uuid.UUID(int=7)), "2026-12-04T18:00:00+00:00", None, 1.5]
