"""The audit trail's pure parts: route templates and request ids."""

from __future__ import annotations

from typing import Any

from common.audit import _request_id, route_template


def _scope(path: str, params: dict[str, Any], *, routed: bool = True) -> dict[str, Any]:
    scope: dict[str, Any] = {"path": path, "path_params": params}
    if routed:
        scope["route"] = object()
    return scope


def test_a_route_template_puts_the_path_parameters_back_by_name() -> None:
    assert route_template(_scope("/v1/teams", {})) == "/v1/teams"
    assert (
        route_template(
            _scope("/v1/teams/7f3a/members/91b0", {"team_id": "7f3a", "member_id": "91b0"})
        )
        == "/v1/teams/{team_id}/members/{member_id}"
    )
    assert (
        route_template(_scope("/v1/evaluation-rounds/abc:approve", {"round_id": "abc"}))
        == "/v1/evaluation-rounds/{round_id}:approve"
    )
    assert route_template(_scope("/v1/activities:batch", {})) == "/v1/activities:batch"
    assert route_template(_scope("/nowhere", {}, routed=False)) == "unmatched"


def test_a_callers_plain_request_id_is_kept_and_anything_else_replaced() -> None:
    def given(value: bytes) -> str:
        return _request_id({"headers": [(b"x-request-id", value)]})

    assert given(b"abc-123") == "abc-123"
    for odd in (b"", b"a" * 65, b"has space", b"new\nline", "ý".encode()):
        made = given(odd)
        assert made != odd.decode("latin-1") and len(made) == 36
    assert len(_request_id({"headers": []})) == 36
