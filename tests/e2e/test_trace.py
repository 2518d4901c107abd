"""One household visit, one trace: the partner's POST, the outbox, Kafka, scoring, the score
topic, notifications and the webhook delivery it causes, on the real stack (`make run`)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.test_make_run import Stack

BASE = {
    "teams": "http://127.0.0.1:8001",
    "activities": "http://127.0.0.1:8002",
    "scoring": "http://127.0.0.1:8003",
    "notifications": "http://127.0.0.1:8004",
}


class Receiver:
    """A real local webhook receiver: records every request it gets."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append({"headers": dict(self.headers), "body": json.loads(body)})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/cdt"


def spans_of(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait(check, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_one_activity_is_one_trace_across_all_four_services(workdir, subprocess_env) -> None:  # type: ignore[no-untyped-def]
    env = {
        k: v
        for k, v in subprocess_env.items()
        if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "CDT_ADMIN_TOKEN", "CDT_TRACE_FILE")
    }
    env["CDT_WEBHOOK_ALLOW_PRIVATE"] = "true"  # the receiver is on loopback
    data_dir = workdir / "trace-stack"
    receiver = Receiver()
    stack = Stack(data_dir, env)
    try:
        stack.wait_for("all four services ready", timeout=240)
        token = (data_dir / "admin-token").read_text().strip()
        operator = {"Authorization": f"Bearer {token}"}
        http = httpx.Client(timeout=30)

        def ok(reply: httpx.Response, *codes: int) -> dict[str, Any]:
            assert reply.status_code in (codes or (200, 201)), reply.text
            return reply.json()  # type: ignore[no-any-return]

        ok(
            http.post(
                f"{BASE['teams']}/v1/admin-units:import",
                json={"source": "vietnam-provinces"},
                headers=operator,
            )
        )
        team = ok(
            http.post(
                f"{BASE['teams']}/v1/teams",
                headers=operator,
                json={
                    "code": "TRACE-1",
                    "name": "Tổ CNSCĐ phường Mỹ Tho",
                    "unit_code": "28261",
                    "established_on": "2024-01-01",
                },
            )
        )
        member = ok(
            http.post(
                f"{BASE['teams']}/v1/teams/{team['id']}/members",
                headers=operator,
                json={
                    "full_name": "Nguyễn Văn A",
                    "role": "leader",
                    "affiliation": "youth_union",
                    "phone": "0912345678",
                    "joined_on": "2024-01-01",
                },
            )
        )
        key = ok(
            http.post(
                f"{BASE['activities']}/v1/partners",
                headers=operator,
                json={"name": "e-Đồng Tháp", "provinces": ["82"]},
            )
        )["api_key"]
        ok(
            http.put(
                f"{BASE['notifications']}/v1/rules",
                headers=operator,
                json={
                    "scope": "national",
                    "alert_type": "target_reached",
                    "params": {"indicator_targets": {"app_installs": 1}},
                },
            )
        )
        ok(
            http.post(
                f"{BASE['notifications']}/v1/subscriptions",
                headers=operator,
                json={"url": receiver.url, "scope": "82", "alert_types": ["target_reached"]},
            )
        )

        activity = {
            "id": str(uuid.uuid4()),
            "team_id": team["id"],
            "member_id": member["id"],
            "occurred_at": datetime.now(UTC).isoformat(),
            "kind": "household_visit",
            "skills": ["local_platforms"],
            "citizens_reached": 2,
            "household_ref": "hh-42",
            "outcomes": {"app_installs": 1},
        }

        def post_activity() -> httpx.Response | None:
            reply = http.post(
                f"{BASE['activities']}/v1/activities",
                json=activity,
                headers={"Authorization": f"Bearer {key}"},
            )
            if reply.status_code == 422 and reply.json().get("retryable"):
                return None  # the replica has not seen the team or member yet
            return reply

        accepted = wait(post_activity, 30, "the activities replica to know the team")
        assert accepted.status_code == 201, accepted.text

        def team_alert_delivered() -> list[dict[str, Any]]:
            # The team's alert: its score moved by this activity alone. A unit's score gathers
            # the marks of every batch under it at the unit cadence, the roster's too.
            return [r for r in receiver.requests if r["body"]["data"]["subject_id"] == team["id"]]

        delivered = wait(team_alert_delivered, 60, "the team's alert delivered")
    finally:
        stack.stop()

    everything = wait(lambda: spans_of(data_dir / "traces.jsonl"), 10, "exported spans")
    by_id = {s["span_id"]: s for s in everything}
    post = [
        s
        for s in everything
        if s["service"] == "activities"
        and s["attributes"].get("http.route") == "/v1/activities"
        and 201
        in (s["attributes"].get(k) for k in ("http.response.status_code", "http.status_code"))
    ]
    assert len(post) == 1, "exactly one activity was accepted (earlier tries were retryable)"
    origin = post[0]

    # The webhook delivery that carried the team's alert, and its whole causal history: parents,
    # and links (a consumer batch is the child of its first message and links the others).
    trace_id = delivered[0]["headers"]["traceparent"].split("-")[1]
    webhook = next(
        s
        for s in everything
        if s["trace_id"] == trace_id
        and s["service"] == "notifications"
        and s["kind"] == "CLIENT"
        and s["name"] == "POST"
    )
    assert webhook["attributes"]["http.response.status_code"] == 200
    history: dict[str, dict[str, Any]] = {}
    todo = [webhook]
    while todo:
        span = todo.pop()
        if span["span_id"] in history:
            continue
        history[span["span_id"]] = span
        causes = [span["parent_id"], *(link["span_id"] for link in span["links"])]
        for cause in (by_id.get(c) for c in causes if c):
            if cause is not None:
                assert cause["start_ns"] <= span["start_ns"], (cause["name"], span["name"])
                todo.append(cause)

    assert origin["span_id"] in history, "the webhook delivery does not go back to the POST"
    services = {s["service"] for s in history.values()}
    assert services == {"teams", "activities", "scoring", "notifications"}, services

    def seen(service: str, kind: str, name: str, destination: str) -> bool:
        return any(
            s["service"] == service
            and s["kind"] == kind
            and s["name"].startswith(name)
            and destination in s["attributes"].get("messaging.destination.name", "")
            for s in history.values()
        )

    assert seen("activities", "PRODUCER", "send", "activities.activity-recorded.v1")
    # A batch over several topics is named `process`; its destination lists them.
    assert seen("scoring", "CONSUMER", "process", "activities.activity-recorded.v1")
    assert seen("scoring", "PRODUCER", "send", "scoring.score-updated.v1")
    assert seen("notifications", "CONSUMER", "process", "scoring.score-updated.v1")
    for span in history.values():
        if span["name"].startswith(("send ", "process")):
            attributes = span["attributes"]
            assert attributes["messaging.system"] == "kafka"
            assert attributes["messaging.operation.type"] in ("send", "process")
            assert attributes["messaging.destination.name"]
    consumer = next(s for s in history.values() if s["name"] == "process scoring.score-updated.v1")
    assert consumer["attributes"]["messaging.consumer.group.name"] == "notifications"
    # The delivery is in the trace its alert was raised in (receivers can join it too).
    assert webhook["trace_id"] == trace_id
