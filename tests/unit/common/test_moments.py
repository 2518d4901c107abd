"""Every date and instant a request carries is an ISO 8601 string: a number is refused with an
error naming the field (pydantic's lax mode read it as a Unix timestamp, 0 as 1970-01-01)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import BaseModel, ValidationError

from tests.unit.request_models import request_models


def _moment_fields(model: type[BaseModel]) -> Iterator[str]:
    properties = model.model_json_schema()["properties"]
    for name, schema in properties.items():
        branches = schema.get("anyOf", [schema])
        if any(branch.get("format") in ("date", "date-time") for branch in branches):
            yield name


MOMENT_FIELDS = sorted(
    ((model, name) for model in request_models() for name in _moment_fields(model)),
    key=lambda pair: (pair[0].__name__, pair[1]),
)


def _iso_value(model: type[BaseModel], name: str) -> str:
    schema = model.model_json_schema()["properties"][name]
    formats = {branch.get("format") for branch in schema.get("anyOf", [schema])}
    return "2026-12-06T08:00:00+07:00" if "date-time" in formats else "2026-12-06"


def test_the_request_bodies_have_dates_to_check() -> None:
    assert len(MOMENT_FIELDS) >= 20  # the walk above found the bodies: not a vacuous test


@pytest.mark.parametrize(
    ("model", "name"), MOMENT_FIELDS, ids=[f"{m.__name__}.{n}" for m, n in MOMENT_FIELDS]
)
@pytest.mark.parametrize("number", [0, 1_767_225_600, 0.5, True, "0", "20261206", " 1.5e9 "])
def test_a_number_is_not_a_date(model: type[BaseModel], name: str, number: object) -> None:
    with pytest.raises(ValidationError) as raised:
        model.model_validate({name: number})
    messages = [e["msg"] for e in raised.value.errors() if e["loc"][0] == name]
    assert any("ISO 8601 string, not a number" in message for message in messages), messages


@pytest.mark.parametrize(
    ("model", "name"), MOMENT_FIELDS, ids=[f"{m.__name__}.{n}" for m, n in MOMENT_FIELDS]
)
def test_an_iso_string_still_is(model: type[BaseModel], name: str) -> None:
    try:
        model.model_validate({name: _iso_value(model, name)})
    except ValidationError as raised:  # other required fields may be missing, not this one
        assert not [e for e in raised.errors() if e["loc"][0] == name]
