"""The committed AsyncAPI document is valid AsyncAPI 3.0 and is what the code declares."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema_rs
import yaml

from common import asyncapi, topics

SCHEMA = Path(__file__).resolve().parents[1] / "fixtures" / "asyncapi-3.0.0.schema.json"


def test_the_committed_document_is_what_the_code_declares() -> None:
    committed = asyncapi.DOCUMENT.read_text(encoding="utf-8")
    assert committed == asyncapi.render(), "stale: run python -m common.asyncapi"


def test_the_document_is_valid_asyncapi_3() -> None:
    validator = jsonschema_rs.Draft7Validator(json.loads(SCHEMA.read_text(encoding="utf-8")))
    document = yaml.safe_load(asyncapi.DOCUMENT.read_text(encoding="utf-8"))
    errors = [f"{e.instance_path}: {e.message}" for e in validator.iter_errors(document)]
    assert errors == []


def test_every_topic_and_contract_is_described_with_its_headers_and_key() -> None:
    document = asyncapi.document()
    addresses = {c["address"] for c in document["channels"].values()}
    assert addresses == {t.name for t in topics.DOMAIN_TOPICS}
    for contract in asyncapi.CONTRACTS:
        message = document["components"]["messages"][contract.__name__]
        assert message["headers"]["properties"]["ce_type"]["const"] == contract.CE_TYPE
        assert message["bindings"]["kafka"]["key"]["description"]
        assert set(message["payload"]["properties"]) == set(contract.model_fields)
    refs = json.dumps(document)
    for name in document["components"]["schemas"]:
        assert f"#/components/schemas/{name}" in refs


def test_a_broken_document_is_refused() -> None:
    """The validation can fail: an operation with an action AsyncAPI does not know."""
    validator = jsonschema_rs.Draft7Validator(json.loads(SCHEMA.read_text(encoding="utf-8")))
    document = asyncapi.document()
    next(iter(document["operations"].values()))["action"] = "publish"  # AsyncAPI 2 wording
    assert not validator.is_valid(json.loads(json.dumps(document)))
