"""The OpenAPI documents of the four services, committed under `docs/openapi/`.

`python -m devstack.openapi` rewrites them from the code; `--check` exits 1 when one is stale
(the suite runs the same comparison). Each service also serves its document at
`/openapi.json`, in production too.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parents[2] / "docs" / "openapi"
SERVICES = {
    "teams": "TeamsSettings",
    "activities": "ActivitiesSettings",
    "scoring": "ScoringSettings",
    "notifications": "NotificationsSettings",
}


def settings_for(service: str) -> Any:
    """The service's settings as a document build needs them (no traces exported)."""
    settings_class = getattr(importlib.import_module(f"{service}.settings"), SERVICES[service])
    return settings_class(CDT_TRACES_EXPORTER="none", CDT_HOUSEHOLD_HMAC_KEY="x" * 32)


def openapi_of(service: str) -> dict[str, Any]:
    """The service's document, from its app built (not started) as `python -m <service>` does."""
    bootstrap = importlib.import_module(f"{service}.bootstrap")
    app = bootstrap.build_app(bootstrap.build_runtime(settings_for(service)))
    document: dict[str, Any] = app.openapi()
    return document


def render(service: str) -> str:
    return json.dumps(openapi_of(service), indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The services' OpenAPI documents")
    parser.add_argument("--check", action="store_true", help="exit 1 if one is stale")
    args = parser.parse_args(argv)
    DOCS.mkdir(parents=True, exist_ok=True)
    stale = []
    for service in SERVICES:
        path = DOCS / f"{service}.json"
        text = render(service)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path))
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"stale: {', '.join(stale)}: run python -m devstack.openapi", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
