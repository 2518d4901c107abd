"""Text as people send it, made fit to store, show and compare.

Every free-text field of a request is one of these types. Names are normalised to Unicode NFC
and trimmed, so the NFC and NFD spellings of "Hòa" are one name. Characters that PostgreSQL
cannot store (U+0000, lone surrogates) or a reader cannot see (control characters) are refused
with a validation error naming the field, instead of failing at the database.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

# C0 and C1 controls, DEL and lone surrogates. Free text keeps tab and line breaks.
_UNSEEN_IN_NAMES = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_UNSEEN_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def _refuse_unseen(value: str, pattern: re.Pattern[str]) -> None:
    found = pattern.search(value)
    if found is not None:
        raise ValueError(
            f"contains U+{ord(found.group()):04X}, a character that cannot be stored or seen"
        )


def _nfc(value: str) -> str:
    return value if unicodedata.is_normalized("NFC", value) else unicodedata.normalize("NFC", value)


def clean_text(value: str) -> str:
    """Free text (a reason, a description, a reference): NFC, control characters refused."""
    _refuse_unseen(value, _UNSEEN_IN_TEXT)
    return _nfc(value)


def clean_name(value: str) -> str:
    """A name: NFC, trimmed, on one line, not blank."""
    _refuse_unseen(value, _UNSEEN_IN_NAMES)
    name = _nfc(value).strip()
    if not name:
        raise ValueError("is blank")
    return name


@dataclass(frozen=True)
class Documented:
    """A `pattern` for the JSON Schema only: the validator beside it enforces the rule (with
    an error that says which character is wrong), the document states it for clients."""

    pattern: str

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema: dict[str, Any] = handler(core_schema)
        schema["pattern"] = self.pattern
        return schema


# What the validators accept, as JSON Schema patterns (lone surrogates cannot be written in a
# JSON document, so they are left out; they are refused all the same).
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"
_NAME_CHAR = r"[^\x00-\x1f\x7f-\x9f]"
NAME_PATTERN = rf"^{_NAME_CHAR}*[^\s\x00-\x1f\x7f-\x9f]{_NAME_CHAR}*$"

FreeText = Annotated[str, AfterValidator(clean_text), Documented(TEXT_PATTERN)]
NameText = Annotated[str, AfterValidator(clean_name), Documented(NAME_PATTERN)]


def blank_to_none(value: object) -> object:
    """An optional text left blank (empty, or spaces only) is absent."""
    if isinstance(value, str) and not value.strip():
        return None
    return value
