from __future__ import annotations

import json
from pathlib import Path

import pytest

from devstack import trace

T1, T2 = "a" * 32, "b" * 32


def span(
    trace_id: str,
    span_id: str,
    parent: str | None,
    name: str,
    service: str,
    start: int,
    **extra: object,
) -> dict[str, object]:
    return {
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_id": parent,
        "name": name,
        "kind": "INTERNAL",
        "service": service,
        "start_ns": start,
        "duration_ms": 1.5,
        "status": "UNSET",
        "attributes": extra.pop("attributes", {}),
        "links": extra.pop("links", []),
    }


@pytest.fixture
def span_file(tmp_path: Path) -> Path:
    spans = [
        span(
            T1,
            "1" * 16,
            None,
            "POST /v1/activities",
            "activities",
            1_000,
            attributes={"http.route": "/v1/activities"},
        ),
        span(
            T1,
            "2" * 16,
            "1" * 16,
            "send activities.activity-recorded.v1",
            "activities",
            2_000,
            attributes={"messaging.destination.name": "activities.activity-recorded.v1"},
        ),
        span(T1, "3" * 16, "2" * 16, "process activities.activity-recorded.v1", "scoring", 3_000),
        span(
            T2,
            "4" * 16,
            None,
            "process",
            "notifications",
            9_000,
            links=[{"trace_id": T1, "span_id": "3" * 16}],
        ),
    ]
    path = tmp_path / "traces.jsonl"
    path.write_text("\n".join(json.dumps(s) for s in spans) + "\n{truncated")
    return path


def test_show_renders_an_indented_tree_with_linked_spans(span_file: Path) -> None:
    lines = list(trace.render(trace.load_spans(span_file), T1))
    assert lines[0].startswith(f"trace {T1}  (3 spans")
    assert lines[1].startswith("[activities] POST /v1/activities")
    assert "http.route=/v1/activities" in lines[1]
    assert lines[2].startswith("  [activities] send activities.activity-recorded.v1")
    assert lines[3].startswith("    [scoring] process activities.activity-recorded.v1")
    assert lines[4].startswith("      ↪ link [notifications] process")


def test_last_picks_the_most_recent_root(
    span_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert trace.main(["--file", str(span_file), "last"]) == 0
    assert capsys.readouterr().out.startswith(f"trace {T2}")


def test_unknown_trace_is_a_clear_error(span_file: Path) -> None:
    with pytest.raises(SystemExit, match="not found"):
        trace.main(["--file", str(span_file), "show", "c" * 32])
