"""The message catalogues (`libs/common/locale/*/LC_MESSAGES/messages.po`), kept up to date with
the code.

`python -m devstack.messages` extracts every message id from `libs/common` and `services`, adds
the new ones to each catalogue (English: the id itself, the code's source language; Vietnamese:
empty, to be translated) and drops the ones no code uses any more. `--check` exits 1 when a
catalogue is stale, a translation is missing or one fills a field its id does not have
(`tests/unit/common/test_i18n.py` runs the same comparison).

What counts as a message id (string literals only):
- the first argument of `_(...)` and `N_(...)` (`common.i18n`);
- a problem's title and detail: the 2nd and 3rd arguments of `ProblemError(...)`, and the
  `title=` / `detail=` arguments of `ProblemError(...)` and `problem_response(...)`.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from string import Formatter

from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po, write_po

from common.i18n import DOMAIN, Language, catalogue_path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = (ROOT / "libs" / "common", ROOT / "services")
MARKERS = frozenset({"_", "N_"})
HEADER_COMMENT = """\
# The {language} texts of cdt-platform (common.i18n). Ids are the English texts of the code.
# Update with `python -m devstack.messages`, then translate every empty msgstr."""
# A new catalogue's header dates: fixed, so that a rerun rewrites the files byte for byte.
FIXED_DATE = datetime(2026, 1, 1, tzinfo=UTC)
# The calls taking a problem's title and detail, and their positions (0-based) when positional.
PROBLEM_CALLS = {"ProblemError": (1, 2), "problem_response": ()}


def message_ids(source: str) -> Iterator[str]:
    """The message ids of one Python module, found on its syntax tree (which tells positions
    and keyword arguments apart, as a token scan cannot)."""
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
            continue  # `obj.f(...)` is not ours: `ProblemError.invalid` takes no title
        name = node.func.id
        if name in MARKERS and node.args:
            candidates = [node.args[0]]
        elif name in PROBLEM_CALLS:
            positions = PROBLEM_CALLS[name]
            candidates = [node.args[i] for i in positions if i < len(node.args)]
            candidates += [k.value for k in node.keywords if k.arg in ("title", "detail")]
        else:
            continue
        for argument in candidates:
            if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                yield argument.value


def extracted_ids() -> dict[str, set[str]]:
    """Every message id in the code, with the files using it (relative to the repository)."""
    found: dict[str, set[str]] = {}
    for source in SOURCES:
        for path in sorted(source.rglob("*.py")):
            for msgid in message_ids(path.read_text(encoding="utf-8")):
                found.setdefault(msgid, set()).add(str(path.relative_to(ROOT)))
    return found


def placeholders(text: str) -> set[str]:
    """The `{name}` fields a text fills (a translation may leave some out, never add one)."""
    return {name for _literal, name, _spec, _conv in Formatter().parse(text) if name}


def read_catalogue(language: Language) -> Catalog:
    with catalogue_path(language).open("rb") as source:
        return read_po(source, locale=language.value, domain=DOMAIN)


def updated_catalogue(language: Language, ids: Mapping[str, set[str]]) -> Catalog:
    """The catalogue holding exactly `ids`: translations kept, new English ones filled in."""
    old = read_catalogue(language) if catalogue_path(language).exists() else Catalog()
    new = Catalog(
        locale=language.value,
        domain=DOMAIN,
        header_comment=HEADER_COMMENT.format(language=language.value),
        project="cdt-platform",
        version="1",
        # Kept from the catalogue being updated: a rerun without changes rewrites nothing.
        creation_date=old.creation_date if old.locale else FIXED_DATE,
        revision_date=old.revision_date if old.locale else FIXED_DATE,
        fuzzy=False,
        charset="utf-8",
    )
    for msgid in sorted(ids):
        previous = old.get(msgid)
        translation = str(previous.string) if previous is not None and previous.string else ""
        if not translation and language is Language.EN:
            translation = msgid
        new.add(msgid, translation, locations=[(path, 0) for path in sorted(ids[msgid])])
    return new


def problems(ids: Mapping[str, set[str]]) -> list[str]:
    """Why the committed catalogues do not match the code, if they do not."""
    found = []
    for language in Language:
        catalogued = {str(m.id): str(m.string) for m in read_catalogue(language) if m.id}
        for msgid in sorted(set(ids) - set(catalogued)):
            found.append(f"{language}: {msgid!r} is not in the catalogue")
        for msgid in sorted(set(catalogued) - set(ids)):
            found.append(f"{language}: {msgid!r} is no longer used")
        for msgid, string in sorted(catalogued.items()):
            if not string:
                found.append(f"{language}: {msgid!r} has no translation")
            elif not placeholders(string) <= placeholders(msgid):
                found.append(f"{language}: {string!r} fills fields {msgid!r} does not have")
    return found


def write(language: Language, catalog: Catalog) -> None:
    path = catalogue_path(language)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as target:
        write_po(target, catalog, width=100, omit_header=False, include_lineno=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a catalogue is stale")
    args = parser.parse_args(argv)
    ids = extracted_ids()
    if not args.check:
        for language in Language:
            write(language, updated_catalogue(language, ids))
    found = problems(ids)
    for problem in found:
        print(problem, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
