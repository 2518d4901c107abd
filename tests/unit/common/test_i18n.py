"""The languages people read: negotiation from `Accept-Language`, and catalogues that hold every
message of the code in Vietnamese and English."""

from __future__ import annotations

import pytest

from common.i18n import Language, Message, _, negotiate, render, translate
from devstack import messages


@pytest.mark.parametrize(
    ("header", "language"),
    [
        (None, Language.VI),
        ("", Language.VI),
        ("en", Language.EN),
        ("EN-us", Language.EN),
        ("en-GB,vi;q=0.5", Language.EN),
        ("vi-VN,en;q=0.8", Language.VI),
        ("fr, en;q=0.7, vi;q=0.9", Language.VI),
        ("fr, en;q=0.9, vi;q=0.7", Language.EN),
        ("de", Language.VI),
        ("*", Language.VI),
        ("en;q=0", Language.VI),
        ("en;q=bad", Language.VI),
        (",;,;q=", Language.VI),
    ],
)
def test_the_language_follows_accept_language(header: str | None, language: Language) -> None:
    assert negotiate(header) is language


def test_the_catalogues_hold_every_message_of_the_code_in_both_languages() -> None:
    """Extraction finds no id the catalogues lack, none they keep is unused, and every one is
    translated (run `python -m devstack.messages` after changing a text, then translate)."""
    assert messages.problems(messages.extracted_ids()) == []


def test_a_message_renders_in_each_language_with_its_arguments() -> None:
    message = _("No team {ref}.", ref="T-01")
    assert message.render(Language.EN) == "No team T-01."
    assert message.render(Language.VI) == "Không tìm thấy tổ T-01."
    assert Message.from_json(message.as_json()) == message
    assert str(message) == "No team T-01."


def test_plain_strings_are_looked_up_and_unknown_ones_pass_through() -> None:
    assert render("Not Found", Language.VI) == "Không tìm thấy"
    assert render("Not Found", Language.EN) == "Not Found"
    assert render("relation does not exist", Language.VI) == "relation does not exist"
    assert translate("", Language.VI) == ""


def test_vietnamese_texts_differ_from_english_ones() -> None:
    """A Vietnamese catalogue that copied an English text is untranslated, not translated (a
    few texts are the same in both: codes, or a bare placeholder)."""
    same = [
        m.id
        for m in messages.read_catalogue(Language.VI)
        if m.id and m.string == m.id and any(c.isalpha() for c in str(m.id).replace("{", ""))
    ]
    assert same == []
