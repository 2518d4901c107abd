"""Every event type's schema is registered, and no change breaks a reader of an earlier
version (BACKWARD_TRANSITIVE): the rule itself is tested on edits of a real schema."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from common import schemas
from common.asyncapi import CONTRACTS
from common.contracts.scoring import EvaluationRoundChanged, ScoreUpdated


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: c.CE_TYPE)
def test_every_schema_is_registered_and_compatible_with_every_version(contract: Any) -> None:
    assert schemas.check(contract) == []


def edited(contract: Any, edit: Any) -> dict[str, Any]:
    schema = copy.deepcopy(schemas.schema_of(contract))
    edit(schema)
    return schema


def test_adding_an_optional_field_or_a_value_is_compatible() -> None:
    old = schemas.schema_of(ScoreUpdated)

    def add_field(s: dict[str, Any]) -> None:
        s["properties"]["region"] = {"type": "string", "default": ""}

    assert schemas.breaking_changes(old, edited(ScoreUpdated, add_field)) == []
    rounds = schemas.schema_of(EvaluationRoundChanged)

    def add_state(s: dict[str, Any]) -> None:
        s["properties"]["state"]["enum"].append("archived")

    assert schemas.breaking_changes(rounds, edited(EvaluationRoundChanged, add_state)) == []


@pytest.mark.parametrize(
    ("what", "edit", "expected"),
    [
        ("remove", lambda s: s["properties"].pop("rank"), "/rank: removed"),
        (
            "rename",
            lambda s: s["properties"].update(position=s["properties"].pop("rank")),
            "/rank: removed",
        ),
        (
            "retype",
            lambda s: s["properties"].update(score={"type": "string"}),
            "/score: type",
        ),
        ("require", lambda s: s["required"].append("rank"), "/rank: newly required"),
    ],
)
def test_removing_renaming_retyping_or_requiring_breaks(
    what: str, edit: Any, expected: str
) -> None:
    old = schemas.schema_of(ScoreUpdated)
    changes = schemas.breaking_changes(old, edited(ScoreUpdated, edit))
    assert any(expected in change for change in changes), (what, changes)


def test_dropping_a_value_of_an_enum_breaks() -> None:
    old = schemas.schema_of(EvaluationRoundChanged)

    def drop(s: dict[str, Any]) -> None:
        s["properties"]["state"]["enum"].remove("reopened")

    changes = schemas.breaking_changes(old, edited(EvaluationRoundChanged, drop))
    assert changes and "reopened" in changes[0]
