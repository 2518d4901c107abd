"""The four services as real `python -m <service> api` processes on free ports, plus a seeded world.

Running them as processes (not in-process ASGI) lets the tests read each service's own log
output, see the headers uvicorn adds, and deliver real signals for the graceful-shutdown tests.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from tests.helpers import OPERATOR, eventually, start_groups_at_topic_ends

SERVICES = ("teams", "activities", "scoring", "notifications")
HMAC_KEY = "security-household-secret-" + secrets.token_hex(8)
DONG_THAP, MY_THO = "82", "28261"  # province, a commune of it
HA_NOI, HOAN_KIEM = "01", "00070"
READY_TIMEOUT = 90.0
STOP_TIMEOUT = 40.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Service:
    name: str
    port: int
    log: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.name, "api"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited with {self.proc.returncode}: {self.tail()}"
                )
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.name} not ready after {timeout} s: {self.tail()}")

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM and wait: the exit status (negative: killed by that signal)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


@dataclass
class Stack:
    services: dict[str, Service]
    workdir: Path

    def url(self, name: str) -> str:
        return self.services[name].url

    def http(self, name: str, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url(name), timeout=30, **kwargs)

    def ensure_running(self) -> None:
        """Restart whatever a previous test stopped (shutdown tests stop services)."""
        for service in self.services.values():
            if service.proc is None or service.proc.poll() is not None:
                service.spawn()
                service.wait_ready()

    def logs(self) -> str:
        return "\n".join(s.log.read_text(errors="replace") for s in self.services.values())

    def traces(self) -> str:
        path = self.workdir / "traces.jsonl"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture(scope="package")
def stack(subprocess_env: dict[str, str], workdir: Path) -> Iterator[Stack]:
    root = workdir / "security"
    root.mkdir(exist_ok=True)
    base = {
        **subprocess_env,
        "CDT_ENV": "test",
        "CDT_HOUSEHOLD_HMAC_KEY": HMAC_KEY,
        "CDT_TRACE_FILE": str(root / "traces.jsonl"),
        "CDT_TRACE_SQL": "false",
        "CDT_LOG_LEVEL": "INFO",
        "CDT_SHUTDOWN_DELAY_SECONDS": "2",
        "CDT_CONSUMER_BATCH_SIZE": "25",
        "CDT_LAG_INTERVAL_SECONDS": "1",
        "CDT_PARTNER_RATE_LIMIT": "1000",
    }
    ports = {name: free_port() for name in SERVICES}
    # Teams is the local issuer of people's access tokens; every service verifies them.
    issuer = f"http://127.0.0.1:{ports['teams']}"
    base |= {
        "CDT_OIDC_ISSUER": issuer,
        "TEAMS_ISSUER_URL": issuer,
        "CDT_OIDC_DISABLED_URL": f"{issuer}/v1/auth/disabled-subjects",
    }
    services = {}
    for name in SERVICES:
        port = ports[name]
        env = {**base, f"{name.upper()}_PORT": str(port)}
        if name == "teams":  # low enough for API4 to reach it, high enough for the others
            env["CDT_PARTNER_RATE_LIMIT"] = "25"
        services[name] = Service(name, port, root / f"{name}.log", env)
    asyncio.run(start_groups_at_topic_ends(subprocess_env["KAFKA_BOOTSTRAP_SERVERS"]))
    for service in services.values():
        service.spawn()
    try:
        for service in services.values():
            service.wait_ready()
        yield Stack(services, root)
    finally:
        for service in services.values():
            if service.proc is not None and service.proc.poll() is None:
                service.proc.send_signal(signal.SIGTERM)
        for service in services.values():
            if service.proc is not None:
                try:
                    service.proc.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    service.proc.kill()
                    service.proc.wait()


def built_apps(service_env: dict[str, str], **overrides: Any) -> dict[str, FastAPI]:
    """Each service's FastAPI app, built (not started) exactly as `python -m <svc>` builds it."""
    from activities import bootstrap as activities_bootstrap
    from activities.settings import ActivitiesSettings
    from notifications import bootstrap as notifications_bootstrap
    from notifications.settings import NotificationsSettings
    from scoring import bootstrap as scoring_bootstrap
    from scoring.settings import ScoringSettings
    from teams import bootstrap as teams_bootstrap
    from teams.settings import TeamsSettings

    common = {
        "database_url": service_env["DATABASE_URL"],
        "kafka_bootstrap_servers": service_env["KAFKA_BOOTSTRAP_SERVERS"],
        "cdt_admin_token": "test-operator-token",
        "CDT_TRACES_EXPORTER": "none",
        "CDT_TRACE_SQL": False,
        "CDT_HOUSEHOLD_HMAC_KEY": "x" * 32,
        "TEAMS_SIGNING_KEY_PASSPHRASE": "y" * 32,  # both required in prod
        **overrides,
    }
    apps = {}
    for name, bootstrap, settings_class in (
        ("teams", teams_bootstrap, TeamsSettings),
        ("activities", activities_bootstrap, ActivitiesSettings),
        ("scoring", scoring_bootstrap, ScoringSettings),
        ("notifications", notifications_bootstrap, NotificationsSettings),
    ):
        runtime = bootstrap.build_runtime(settings_class(**common))
        apps[name] = bootstrap.build_app(runtime)
    return apps


def tag() -> str:
    return uuid.uuid4().hex[:8].upper()


@dataclass
class World:
    """Two provinces, a team with a member in each, a partner key scoped to each."""

    team_dt: dict[str, Any]
    member_dt: dict[str, Any]
    team_hn: dict[str, Any]
    member_hn: dict[str, Any]
    partner_dt: dict[str, Any]
    partner_hn: dict[str, Any]
    phones: list[str]
    household_refs: list[str] = field(default_factory=list)
    activity_dt: str = ""  # posted by partner_dt for team_dt

    @property
    def key_dt(self) -> dict[str, str]:
        return bearer(self.partner_dt["api_key"])

    @property
    def key_hn(self) -> dict[str, str]:
        return bearer(self.partner_hn["api_key"])

    def secrets(self) -> list[str]:
        """What must never appear in a log line, an event or another caller's response."""
        return [
            "test-operator-token",
            HMAC_KEY,
            self.partner_dt["api_key"],
            self.partner_hn["api_key"],
            *self.phones,
            *self.household_refs,
        ]


def random_phone() -> str:
    return "09" + "".join(secrets.choice("0123456789") for _ in range(8))


def activity_body(team: dict[str, Any], member: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "team_id": team["id"],
        "member_id": member["id"],
        "occurred_at": "2026-01-15T08:30:00+07:00",
        "kind": "household_visit",
        "skills": ["public_services"],
        "citizens_reached": 2,
        "household_ref": "HH-" + uuid.uuid4().hex,
        "outcomes": {"app_installs": 1},
    }
    body.update(overrides)
    return body


async def post_until_known(
    client: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str]
) -> httpx.Response:
    """Post an activity, re-posting while the activities replica has not learnt the team yet."""

    async def attempt() -> httpx.Response | None:
        reply = await client.post("/v1/activities", json=body, headers=headers)
        if reply.status_code == 422 and reply.json().get("retryable"):
            return None
        return reply

    return await eventually(attempt, timeout=60, interval=0.3, what="team replicated")


@pytest_asyncio.fixture(scope="package")
async def world(stack: Stack) -> AsyncIterator[World]:
    stack.ensure_running()
    async with stack.http("teams") as teams, stack.http("activities") as activities:
        imported = await teams.post(
            "/v1/admin-units:import", json={"source": "vietnam-provinces"}, headers=OPERATOR
        )
        assert imported.status_code == 200, imported.text
        phones = [random_phone(), random_phone()]
        made: list[dict[str, Any]] = []
        for unit, phone in ((MY_THO, phones[0]), (HOAN_KIEM, phones[1])):
            team = await teams.post(
                "/v1/teams",
                json={"code": f"SEC-{tag()}", "name": "Tổ CNSCĐ", "unit_code": unit},
                headers=OPERATOR,
            )
            assert team.status_code == 201, team.text
            member = await teams.post(
                f"/v1/teams/{team.json()['id']}/members",
                json={"full_name": "Nguyễn Văn A", "phone": phone, "joined_on": "2022-04-01"},
                headers=OPERATOR,
            )
            assert member.status_code == 201, member.text
            made += [team.json(), member.json()]
        partners = []
        for province in (DONG_THAP, HA_NOI):
            reply = await activities.post(
                "/v1/partners",
                json={"name": f"app {province}", "provinces": [province]},
                headers=OPERATOR,
            )
            assert reply.status_code == 201, reply.text
            partners.append(reply.json())
        world = World(*made, *partners, phones=phones)
        body = activity_body(world.team_dt, world.member_dt)
        world.household_refs.append(body["household_ref"])
        posted = await post_until_known(activities, body, world.key_dt)
        assert posted.status_code == 201, posted.text
        world.activity_dt = body["id"]
        # The member of the other province must be known to activities too.
        other = activity_body(world.team_hn, world.member_hn)
        world.household_refs.append(other["household_ref"])
        posted = await post_until_known(activities, other, world.key_hn)
        assert posted.status_code == 201, posted.text

        async def partner_known_to_teams() -> bool:
            reply = await teams.get(f"/v1/teams/{world.team_dt['id']}", headers=world.key_dt)
            return reply.status_code == 200

        await eventually(partner_known_to_teams, timeout=60, what="partner replicated to teams")
        yield world
