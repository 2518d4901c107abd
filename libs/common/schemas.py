"""The JSON Schema of every event type, registered by version under `docs/schemas/`, and the
rule that keeps them from breaking their readers.

`python -m common.schemas` registers the current schema of each event type as a new version
(`docs/schemas/<ce_type>/<n>.json`) when it differs from the latest one, and refuses to when
the change would break a reader of any earlier version (a schema registry's
BACKWARD_TRANSITIVE mode: optional fields may be added; nothing removed, renamed, retyped or
newly required). A breaking change needs a new `…v2` topic and contract instead, both run side
by side until the consumers have moved.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common.asyncapi import CONTRACTS
from common.envelope import EventContract

REGISTRY = Path(__file__).resolve().parents[2] / "docs" / "schemas"


def schema_of(contract: type[EventContract]) -> dict[str, Any]:
    return contract.model_json_schema(mode="serialization")


def versions(ce_type: str) -> list[dict[str, Any]]:
    """The registered versions of an event type's schema, oldest first."""
    folder = REGISTRY / ce_type
    files = sorted(folder.glob("*.json"), key=lambda p: int(p.stem)) if folder.exists() else []
    return [json.loads(path.read_text(encoding="utf-8")) for path in files]


def breaking_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What in `new` would break a reader written for `old` (empty: compatible)."""
    return list(_compare(old, new, path="", old_root=old, new_root=new))


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        resolved: dict[str, Any] = root["$defs"][ref.removeprefix("#/$defs/")]
        return resolved
    return schema


def _types(schema: dict[str, Any]) -> set[str]:
    """The JSON types a schema admits (`anyOf` branches included; none stated: any)."""
    if "anyOf" in schema:
        return {t for branch in schema["anyOf"] for t in _types(branch)} or {"any"}
    if "const" in schema or "enum" in schema:
        return {"enum"}
    declared = schema.get("type")
    if declared is None:
        return {"any"} if "$ref" not in schema else {"object"}
    return {declared} if isinstance(declared, str) else set(declared)


def _compare(
    old: dict[str, Any], new: dict[str, Any], *, path: str, old_root: dict[str, Any],
    new_root: dict[str, Any],
) -> Iterator[str]:  # fmt: skip
    old, new = _resolve(old, old_root), _resolve(new, new_root)
    old_types, new_types = _types(old), _types(new)
    if "any" not in new_types and not old_types <= new_types:
        yield f"{path or '/'}: type {sorted(old_types)} became {sorted(new_types)}"
        return
    old_values = set(map(str, old.get("enum", [old["const"]] if "const" in old else [])))
    new_values = set(map(str, new.get("enum", [new["const"]] if "const" in new else [])))
    if old_values and new_values and not old_values <= new_values:
        yield f"{path or '/'}: values {sorted(old_values - new_values)} no longer allowed"
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    for name in old_props:
        if name not in new_props:
            yield f"{path}/{name}: removed (or renamed)"
        else:
            yield from _compare(
                old_props[name], new_props[name], path=f"{path}/{name}",
                old_root=old_root, new_root=new_root,
            )  # fmt: skip
    for name in set(new.get("required", [])) - set(old.get("required", [])):
        yield f"{path}/{name}: newly required"
    if "items" in old and "items" in new:
        yield from _compare(
            old["items"], new["items"], path=f"{path}[]", old_root=old_root, new_root=new_root
        )
    for index, (a, b) in enumerate(zip(old.get("anyOf", []), new.get("anyOf", []), strict=False)):
        if _types(a) == _types(b):
            yield from _compare(a, b, path=f"{path}|{index}", old_root=old_root, new_root=new_root)


def check(contract: type[EventContract]) -> list[str]:
    """Problems of the contract's current schema against its registered versions."""
    current = schema_of(contract)
    registered = versions(contract.CE_TYPE)
    problems = [
        f"{contract.CE_TYPE} against version {n}: {change}"
        for n, old in enumerate(registered, start=1)
        for change in breaking_changes(old, current)
    ]
    if not registered or registered[-1] != current:
        problems.append(f"{contract.CE_TYPE}: not registered (run python -m common.schemas)")
    return problems


def register(contract: type[EventContract]) -> str | None:
    """Write the current schema as a new version if it changed and breaks no earlier one."""
    current = schema_of(contract)
    registered = versions(contract.CE_TYPE)
    if registered and registered[-1] == current:
        return None
    breaking = [c for old in registered for c in breaking_changes(old, current)]
    if breaking:
        raise SystemExit(
            f"{contract.CE_TYPE}: breaking change, publish a v2 topic instead:\n  "
            + "\n  ".join(breaking)
        )
    folder = REGISTRY / contract.CE_TYPE
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{len(registered) + 1}.json"
    path.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Register the event schemas by version")
    parser.add_argument("--check", action="store_true", help="exit 1 on a problem")
    args = parser.parse_args(argv)
    if args.check:
        problems = [p for contract in CONTRACTS for p in check(contract)]
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    for contract in CONTRACTS:
        if (written := register(contract)) is not None:
            print(f"registered {written}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
