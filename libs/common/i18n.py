"""The languages people read: Vietnamese (the default) and English, from gettext catalogues.

Code carries English message ids; `libs/common/locale/<language>/LC_MESSAGES/messages.po` holds
their translations. The `.po` files are the only committed form: each is compiled in memory
(Babel) the first time its language is used, so a fresh clone needs no build step and a
catalogue and the code running it can never disagree through a stale `.mo`.
`python -m devstack.messages` brings the catalogues up to date with the code (new ids in, gone
ids out); a test fails while any id lacks a translation or extraction finds one not catalogued.

Only human text is translated. Problem `type` URIs, alert types, codes and JSON field names are
built from the English ids or fixed in code, so they read the same in every language.

Pure: no I/O beyond reading the catalogues, so domain modules may mark their texts with `_`.
"""

from __future__ import annotations

import functools
import gettext
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from io import BytesIO
from pathlib import Path
from typing import Any

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

LOCALE_DIR = Path(__file__).with_name("locale")
DOMAIN = "messages"


class Language(StrEnum):
    VI = "vi"
    EN = "en"


DEFAULT_LANGUAGE = Language.VI
_CODES = frozenset(language.value for language in Language)


def catalogue_path(language: Language) -> Path:
    return LOCALE_DIR / language.value / "LC_MESSAGES" / f"{DOMAIN}.po"


def negotiate(accept_language: str | None) -> Language:
    """The first of our languages the reader accepts, by q-value then order (`vi-VN` counts as
    `vi`); Vietnamese when the header is missing, malformed or names neither."""
    ranked: list[tuple[float, int, str]] = []
    for index, item in enumerate((accept_language or "").split(",")):
        tag, _sep, params = item.strip().partition(";")
        ranked.append((-_quality(params), index, tag.strip().lower().split("-")[0]))
    for negative_quality, _index, primary in sorted(ranked):
        if negative_quality < 0 and primary in _CODES:
            return Language(primary)
    return DEFAULT_LANGUAGE


def _quality(params: str) -> float:
    """The `q=` weight of one Accept-Language item (1 when absent, 0 when unreadable)."""
    for param in params.split(";"):
        name, _sep, value = param.strip().partition("=")
        if name.strip() == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0


@functools.cache
def translations(language: Language) -> gettext.GNUTranslations:
    """The language's catalogue, compiled from its `.po` once per process."""
    with catalogue_path(language).open("rb") as source:
        catalog = read_po(source, locale=language.value, domain=DOMAIN)
    compiled = BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return gettext.GNUTranslations(compiled)


def translate(msgid: str, language: Language) -> str:
    """The text in `language`; a string that is no message id (a database error's own words,
    say) comes back unchanged."""
    if not msgid:  # gettext("") is the catalogue's header, never a text
        return msgid
    return translations(language).gettext(msgid)


@dataclass(frozen=True)
class Message:
    """A text to show someone, translated only when rendered, for the reader at hand: raised
    in one request, stored with an alert, or posted to a webhook in its subscriber's language.
    `args` fill the `{name}` fields of the translated text (format specs such as `{x:g}` too);
    an argument that is itself a `Message` (a level's name, say) is rendered in the same
    language. Stored messages keep JSON values only."""

    msgid: str
    args: Mapping[str, Any] = field(default_factory=dict)

    def render(self, language: Language) -> str:
        text = translate(self.msgid, language)
        if not self.args:
            return text
        return text.format(**{name: _rendered(v, language) for name, v in self.args.items()})

    def __str__(self) -> str:  # logs and exception messages read the source text
        return self.render(Language.EN)

    def as_json(self) -> dict[str, Any]:
        args = {k: v.as_json() if isinstance(v, Message) else v for k, v in self.args.items()}
        return {"msgid": self.msgid, "args": args}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Message:
        args = {
            k: cls.from_json(v) if isinstance(v, Mapping) and "msgid" in v else v
            for k, v in (data.get("args") or {}).items()
        }
        return cls(str(data["msgid"]), args)


def _rendered(value: Any, language: Language) -> Any:
    return value.render(language) if isinstance(value, Message) else value


def _(msgid: str, /, **args: Any) -> Message:
    """Mark a text for the catalogues (the extractor looks for `_("...")`) and translate it
    later, when the reader's language is known."""
    return Message(msgid, args)


# The levels of the registry and of scores, as a sentence names them ("no commune '01'").
LEVEL_NAMES: dict[str, Message] = {
    "team": _("team"),
    "village": _("village"),
    "commune": _("commune"),
    "district": _("district"),
    "province": _("province"),
    "national": _("nation"),
}


def level_name(level: str) -> Message | str:
    """A level's name in the reader's language; an unknown level reads as its code."""
    return LEVEL_NAMES.get(level, level)


def N_(msgid: str, /) -> str:
    """Mark a message id kept as a plain string, translated where it is shown (a problem title,
    which also names the problem's `type`)."""
    return msgid


Text = str | Message


def render(text: Text, language: Language) -> str:
    """A message in `language`; a plain string is looked up as a message id."""
    return text.render(language) if isinstance(text, Message) else translate(text, language)
