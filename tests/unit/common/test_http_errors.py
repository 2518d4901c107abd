"""RFC 9457 problems and body limits, on a bare FastAPI app (no I/O)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict

from common.app import BodyLimitMiddleware
from common.auth import is_operator_token
from common.problems import ProblemError, install_problem_handlers


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    count: int


def make_client(limit: int = 1024) -> TestClient:
    app = FastAPI()
    install_problem_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=limit)

    @app.post("/items")
    async def create(item: Item) -> Item:
        if item.name == "taken":
            raise ProblemError(409, "Duplicate code", "Item 'taken' exists.")
        if item.name == "boom":
            raise RuntimeError("secret internals 0912345678")
        return item

    return TestClient(app, raise_server_exceptions=False)


def test_validation_errors_name_the_field_and_do_not_echo_input() -> None:
    reply = make_client().post("/items", json={"name": "0912345678", "count": "many", "x": 1})
    assert reply.status_code == 422
    assert reply.headers["content-type"] == "application/problem+json"
    body = reply.json()
    assert {e["field"] for e in body["errors"]} == {"body.count", "body.x"}
    assert "0912345678" not in reply.text


def test_malformed_json_is_400() -> None:
    reply = make_client().post(
        "/items",
        content=b'{"name": ',
        headers={"content-type": "application/json", "accept-language": "en"},
    )
    assert reply.status_code == 400
    assert reply.json()["title"] == "Malformed JSON"


def test_bodies_over_the_limit_are_413_declared_or_streamed() -> None:
    client = make_client(limit=100)
    declared = client.post(
        "/items", content=b"x" * 200, headers={"content-type": "application/json"}
    )
    assert declared.status_code == 413
    streamed = client.post(
        "/items",
        content=iter([b"{" + b" " * 80, b" " * 80 + b"}"]),
        headers={"content-type": "application/json"},
    )
    assert streamed.status_code == 413
    assert streamed.headers["content-type"] == "application/problem+json"


def test_domain_problems_and_unexpected_errors() -> None:
    client = make_client()
    conflict = client.post("/items", json={"name": "taken", "count": 1})
    assert conflict.status_code == 409
    assert conflict.json()["type"].endswith("duplicate-code")
    crash = client.post("/items", json={"name": "boom", "count": 1})
    assert crash.status_code == 500
    assert "secret" not in crash.text and "0912345678" not in crash.text


def test_operator_token_comparison() -> None:
    assert is_operator_token("s3cret", expected="s3cret")
    assert not is_operator_token("s3cret", expected=None)
    assert not is_operator_token(None, expected="s3cret")
    assert not is_operator_token("s3cre", expected="s3cret")


def test_bulk_paths_can_take_larger_bodies() -> None:
    app = FastAPI()
    install_problem_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=100, path_limits={"/bulk": 10_000})

    @app.post("/bulk")
    async def bulk(item: Item) -> Item:
        return item

    client = TestClient(app, raise_server_exceptions=False)
    padded = b'{"name": "n", "count": 1' + b" " * 500 + b"}"
    headers = {"content-type": "application/json"}
    assert client.post("/bulk", content=padded, headers=headers).status_code == 200
    assert client.post("/bulk", content=b" " * 20_000, headers=headers).status_code == 413
