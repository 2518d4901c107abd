"""Text entering the system: names in NFC and trimmed; what cannot be stored or seen refused."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from common.text import clean_name, clean_text
from tests.unit.request_models import request_models

NFD_HOA = unicodedata.normalize("NFD", "Hòa Bình")


def test_a_name_is_stored_in_nfc_and_trimmed() -> None:
    assert NFD_HOA != "Hòa Bình"
    assert clean_name(f"  {NFD_HOA}\u00a0") == "Hòa Bình"


@pytest.mark.parametrize("unseen", ["\x00", "\x1f", "\x7f", "\x85", "\ud800", "\n", "\t"])
def test_a_name_refuses_what_cannot_be_stored_or_seen(unseen: str) -> None:
    with pytest.raises(ValueError, match=f"U\\+{ord(unseen):04X}"):
        clean_name(f"Tổ {unseen}1")


def test_a_blank_name_is_refused() -> None:
    with pytest.raises(ValueError, match="blank"):
        clean_name(" \u3000 ")


def test_free_text_keeps_its_lines_and_refuses_nul() -> None:
    assert clean_text(f"dòng 1\n\tdòng 2 {NFD_HOA}") == "dòng 1\n\tdòng 2 Hòa Bình"
    with pytest.raises(ValueError, match="U\\+0000"):
        clean_text("lý do\x00")


# validated against its alert type's parameters model (notifications.domain, walked here too)
CHECKED_BY_ANOTHER_MODEL = {"RulePut.params"}


def _unguarded_strings(schema: Any, *, guarded: bool = False) -> Iterator[dict[str, Any]]:
    """str schemas with neither a pattern nor one of `common.text`'s validators around them."""
    if isinstance(schema, list):
        for item in schema:
            yield from _unguarded_strings(item, guarded=guarded)
        return
    if not isinstance(schema, dict):
        return
    if schema.get("type") == "str" and not guarded and "pattern" not in schema:
        yield schema
    cleaned = schema.get("type") == "function-after" and schema["function"]["function"] in (
        clean_name,
        clean_text,
    )
    for key, value in schema.items():
        if key not in ("serialization", "metadata"):
            yield from _unguarded_strings(value, guarded=guarded or cleaned)


def _fields(model: type[BaseModel]) -> Iterator[tuple[str, Any]]:
    schema = model.__pydantic_core_schema__
    while schema["type"] in ("definitions", "model"):
        schema = schema["schema"]
    for name, field in schema.get("fields", {}).items():
        yield name, field["schema"]


def test_every_text_field_of_every_request_is_cleaned_or_patterned() -> None:
    models = list(request_models())
    assert {"PartnerCreate", "CampaignIn", "TeamCreate", "MemberRow", "ActivityIn"} <= {
        m.__name__ for m in models
    }
    unguarded = [
        f"{model.__name__}.{name}"
        for model in models
        for name, schema in _fields(model)
        if f"{model.__name__}.{name}" not in CHECKED_BY_ANOTHER_MODEL
        and any(_unguarded_strings(schema))
    ]
    assert unguarded == [], "use common.text.NameText / FreeText, or a pattern"


def test_the_error_names_the_field() -> None:
    from activities.api import PartnerCreate

    with pytest.raises(ValidationError) as refused:
        PartnerCreate.model_validate({"name": "VNPT\x00", "provinces": ["82"]})
    assert [e["loc"] for e in refused.value.errors()] == [("name",)]
