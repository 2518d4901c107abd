"""Every event type's schema is registered, and no change breaks a reader of an earlier
version (BACKWARD_TRANSITIVE): the rule itself is tested on edits of a real schema."""

from __future__ import annotations

import copy
import importlib
from typing import Any

import httpx
import pytest

from common import schemas
from common.asyncapi import CONTRACTS
from common.contracts.scoring import EvaluationRoundChanged, ScoreUpdated
from common.envelope import SCHEMA_BASE_URL


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


async def test_every_service_serves_each_schema_where_its_header_points() -> None:
    from devstack import openapi  # builds the apps the way `python -m <service>` does

    bootstrap = importlib.import_module("scoring.bootstrap")
    settings = openapi.settings_for("scoring")
    app = bootstrap.build_app(bootstrap.build_runtime(settings))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=SCHEMA_BASE_URL
    ) as client:
        for contract in CONTRACTS:
            reply = await client.get(contract.dataschema())
            assert reply.status_code == 200, contract.CE_TYPE
            assert reply.headers["content-type"] == "application/schema+json"
            assert reply.json() == schemas.schema_of(contract)
        missing = await client.get(f"{SCHEMA_BASE_URL}/schemas/vn.cdt.nothing.v1.json")
        assert missing.status_code == 404
