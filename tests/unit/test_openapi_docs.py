"""The committed OpenAPI document of each service is the one the code serves."""

from __future__ import annotations

import pytest

from devstack import openapi


@pytest.mark.parametrize("service", list(openapi.SERVICES))
def test_the_committed_openapi_document_is_current(service: str) -> None:
    committed = (openapi.DOCS / f"{service}.json").read_text(encoding="utf-8")
    assert committed == openapi.render(service), "stale: run python -m devstack.openapi"
