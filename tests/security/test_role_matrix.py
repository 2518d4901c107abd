"""The permission matrix (issue #24 items 2 and 3), proven against the running services: every
endpoint of the four services × every role × a resource inside and outside the role's unit,
each answer checked against what `common.roles` declares.

People are real accounts of the local issuer (teams), logged in once per module. "Inside" is
Mỹ Tho (commune 28261 of Đồng Tháp, province 82), where the province officer, the commune
officer and the team leader hold their grants; "outside" is Hoàn Kiếm (commune 00070 of Hà Nội,
province 01). What the matrix allows must pass authorisation (any answer but 401 / 403, nor 404
where the resource exists); what it refuses must be 403, or 404 for a resource the path names
outside the caller's units; a list outside the caller's units leaves out every row of it.

A route added without a rule in the matrix stops its service from starting; one added without a
request here fails `test_every_endpoint_has_a_request`.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from fastapi import APIRouter

from common.app import api_routes, create_app
from common.db import asyncpg_dsn
from common.roles import ENDPOINTS, OPERATOR_ACTOR, Actor, RoleGrant, Rule, UnitOf, scope_of
from tests.helpers import OPERATOR, eventually, person_login
from tests.security.conftest import (
    DONG_THAP,
    HA_NOI,
    HOAN_KIEM,
    MY_THO,
    Stack,
    World,
    built_apps,
    tag,
)

# Who walks the matrix: (role, unit of the grant); "operator" is the break-glass token.
PEOPLE: dict[str, RoleGrant | None] = {
    "operator": None,
    "ministry_admin": RoleGrant("ministry_admin"),
    "province_officer": RoleGrant("province_officer", DONG_THAP),
    "commune_officer": RoleGrant("commune_officer", MY_THO),
    "team_leader": RoleGrant("team_leader", MY_THO),
    "auditor": RoleGrant("auditor"),
}
PUBLIC_WEBHOOK = "https://93.184.215.14/hooks/cdt"  # a literal public address: no DNS needed


class Expect(Enum):
    ALLOWED = "allowed"  # past authorisation: anything but 401 / 403 (nor 404 on a resource)
    FORBIDDEN = "403"
    NOT_FOUND = "404"
    FILTERED = "filtered"  # 200, without a row of the other side


@dataclass
class Side:
    """One unit's resources: inside (Mỹ Tho) or outside (Hoàn Kiếm) the scoped grants."""

    province: str
    commune: str
    team: dict[str, Any]
    member: dict[str, Any]
    alert_id: str
    round_id: str

    @property
    def path(self) -> tuple[str, str]:
        return (self.province, self.commune)


@dataclass
class Ctx:
    stack: Stack
    inside: Side
    outside: Side
    other_commune: str  # a neighbour of Mỹ Tho in Đồng Tháp
    dummy_account: str
    people: dict[str, dict[str, str]] = field(default_factory=dict)

    def side(self, inside: bool) -> Side:
        return self.inside if inside else self.outside


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


Build = Callable[[Ctx, Side], Awaitable[Request]]


def in_commune(side: Side) -> tuple[str, ...]:
    return side.path


def in_province(side: Side) -> tuple[str, ...]:
    """A partner app's units are its provinces."""
    return (side.province,)


@dataclass(frozen=True)
class Case:
    build: Build
    named_unit_is_hidden: bool = False  # a list of a unit outside is 404 (not an empty list)
    at: Callable[[Side], tuple[str, ...]] = in_commune  # the path of the unit acted in


def call(method: str, url: str, body: Callable[[Side], Any] | None = None) -> Case:
    """A request whose url (formatted with the side's fields) and body depend on the side."""

    async def build(ctx: Ctx, side: Side) -> Request:
        return Request(method, url.format(**_fields(side)), body(side) if body else None)

    return Case(build)


def of_partner(case: Case) -> Case:
    return Case(case.build, at=in_province)


def listing(url: str, *, hidden: bool = False) -> Case:
    return Case(call("GET", url).build, named_unit_is_hidden=hidden)


def fresh(
    method: str, url: str, make: Callable[[Ctx, Side], Awaitable[str]], body: Any = None
) -> Case:
    """A request on a resource made for it alone (a revoked key, a dissolved team cannot be
    revoked or dissolved by the next role)."""

    async def build(ctx: Ctx, side: Side) -> Request:
        return Request(method, url.format(id=await make(ctx, side)), body)

    return Case(build)


def bulk(url: str) -> Case:
    async def build(ctx: Ctx, side: Side) -> Request:
        return Request("POST", url, content=b"", headers={"Content-Type": "text/csv"})

    return Case(build)


def _fields(side: Side) -> dict[str, str]:
    return {
        "province": side.province,
        "commune": side.commune,
        "team": side.team["id"],
        "member": side.member["id"],
        "alert": side.alert_id,
        "round": side.round_id,
        "random": str(uuid.uuid4()),
    }


async def new_partner(ctx: Ctx, side: Side) -> str:
    async with ctx.stack.http("activities") as http:
        reply = await http.post(
            "/v1/partners", json={"name": f"rm {tag()}", "provinces": [side.province]},
            headers=OPERATOR,
        )  # fmt: skip
    assert reply.status_code == 201, reply.text
    return str(reply.json()["id"])


async def new_subscription(ctx: Ctx, side: Side) -> str:
    async with ctx.stack.http("notifications") as http:
        reply = await http.post("/v1/subscriptions", json=subscription(side), headers=OPERATOR)
    assert reply.status_code == 201, reply.text
    return str(reply.json()["id"])


async def new_team(ctx: Ctx, side: Side) -> str:
    async with ctx.stack.http("teams") as http:
        reply = await http.post("/v1/teams", json=team_body(side), headers=OPERATOR)
    assert reply.status_code == 201, reply.text
    return str(reply.json()["id"])


def team_body(side: Side) -> dict[str, Any]:
    return {"code": f"RM-{tag()}", "name": "Tổ CNSCĐ ma trận", "unit_code": side.commune}


def subscription(side: Side) -> dict[str, Any]:
    return {"url": PUBLIC_WEBHOOK, "scope": side.commune, "alert_types": ["target_reached"]}


def target(side: Side) -> dict[str, Any]:
    return {
        "subject_type": "commune", "subject_id": side.commune, "period": "2026",
        "indicator": "app_installs", "value": 40,
    }  # fmt: skip


def campaign(side: Side) -> dict[str, Any]:
    return {
        "id": f"rm-{tag().lower()}", "name": "Chiến dịch", "start_date": "2026-03-01",
        "end_date": "2026-03-31", "unit_codes": [side.commune],
    }  # fmt: skip


def new_round(side: Side) -> dict[str, Any]:
    return {
        "level": "commune",
        "unit_code": side.commune,
        "period": "2033-Q2",
        "due_on": "2033-07-15",
    }


OPERATIONS = {
    "GET /healthz": call("GET", "/healthz"),
    "GET /readyz": call("GET", "/readyz"),
    "GET /metrics": call("GET", "/metrics"),
    "GET /schemas/{ce_type}.json": call("GET", "/schemas/vn.cdt.teams.team.v1.json"),
    "GET /v1/audit": call("GET", "/v1/audit?limit=5"),
    "GET /v1/audit:export": call("GET", f"/v1/audit:export?since={datetime.now(UTC).isoformat()}"),
}
REASON = {"reason": "ma trận quyền"}

# One request per endpoint of every service (what the matrix says of it is in `ENDPOINTS`).
CASES: dict[str, dict[str, Case]] = {
    "teams": {
        **OPERATIONS,
        "GET /.well-known/jwks.json": call("GET", "/.well-known/jwks.json"),
        "GET /.well-known/openid-configuration": call("GET", "/.well-known/openid-configuration"),
        "GET /v1/auth/disabled-subjects": call("GET", "/v1/auth/disabled-subjects"),
        "POST /v1/auth/token": call("POST", "/v1/auth/token", lambda s: {}),
        "POST /v1/invitations:redeem": call("POST", "/v1/invitations:redeem", lambda s: {}),
        "POST /v1/auth/keys:rotate": call("POST", "/v1/auth/keys:rotate"),
        "POST /v1/accounts": call("POST", "/v1/accounts", lambda s: {}),
        "GET /v1/accounts/{account_id}": call("GET", "/v1/accounts/{random}"),
        "POST /v1/accounts/{account_id}:disable": Case(
            lambda ctx, side: _request("POST", f"/v1/accounts/{ctx.dummy_account}:disable")
        ),
        "GET /v1/admin-units": listing("/v1/admin-units?parent={province}"),
        "GET /v1/admin-units/{code}": call("GET", "/v1/admin-units/{commune}"),
        "GET /v1/admin-units/{code}/coverage": call("GET", "/v1/admin-units/{commune}/coverage"),
        "GET /v1/admin-units:crosswalk": listing("/v1/admin-units:crosswalk?code={commune}"),
        "POST /v1/admin-units": call("POST", "/v1/admin-units", lambda s: {}),
        "POST /v1/admin-units/{code}:reparent": call(
            "POST", "/v1/admin-units/{commune}:reparent", lambda s: {}
        ),
        "POST /v1/admin-units/{code}:split": call(
            "POST", "/v1/admin-units/{commune}:split", lambda s: {}
        ),
        "POST /v1/admin-units:import": call("POST", "/v1/admin-units:import", lambda s: {}),
        "POST /v1/admin-units:merge": call("POST", "/v1/admin-units:merge", lambda s: {}),
        "GET /v1/teams": listing("/v1/teams?unit={commune}", hidden=True),
        "GET /v1/teams/{team_ref}": call("GET", "/v1/teams/{team}"),
        "GET /v1/teams/{team_ref}/members": call("GET", "/v1/teams/{team}/members"),
        "GET /v1/members": listing("/v1/members?q=nguyen&unit={commune}", hidden=True),
        "GET /v1/members/{member_ref}": call("GET", "/v1/members/{member}"),
        "POST /v1/teams": call("POST", "/v1/teams", team_body),
        "PATCH /v1/teams/{team_ref}": call(
            "PATCH", "/v1/teams/{team}", lambda s: {"name": "Tổ CNSCĐ đổi tên"}
        ),
        "POST /v1/teams/{team_ref}:dissolve": fresh(
            "POST", "/v1/teams/{id}:dissolve", new_team, {"dissolved_on": "2026-01-31"}
        ),
        "POST /v1/teams/{team_ref}/members": call(
            "POST",
            "/v1/teams/{team}/members",
            lambda s: {"full_name": "Trần Văn B", "joined_on": "2023-01-01"},
        ),
        "PATCH /v1/members/{member_ref}": call(
            "PATCH", "/v1/members/{member}", lambda s: {"full_name": "Nguyễn Văn An"}
        ),
        "POST /v1/members/{member_ref}/trainings": call(
            "POST",
            "/v1/members/{member}/trainings",
            lambda s: {"course": "Kỹ năng số", "completed_on": "2026-01-10"},
        ),
        "POST /v1/teams:bulk": bulk("/v1/teams:bulk"),
        "POST /v1/members:bulk": bulk("/v1/members:bulk"),
    },
    "activities": {
        **OPERATIONS,
        "GET /v1/activities": listing("/v1/activities?unit={commune}"),
        "GET /v1/activities:export": listing("/v1/activities:export?unit={commune}"),
        "POST /v1/activities": call("POST", "/v1/activities", lambda s: {}),
        "POST /v1/activities:batch": call("POST", "/v1/activities:batch", lambda s: []),
        "POST /v1/activities/{activity_id}:void": call(
            "POST", "/v1/activities/{random}:void", lambda s: REASON
        ),
        "POST /v1/partners": of_partner(
            call(
                "POST", "/v1/partners", lambda s: {"name": f"rm {tag()}", "provinces": [s.province]}
            )
        ),
        "DELETE /v1/partners/{partner_id}": of_partner(
            fresh("DELETE", "/v1/partners/{id}", new_partner)
        ),
        "POST /v1/partners/{partner_id}:rotate-key": of_partner(
            fresh("POST", "/v1/partners/{id}:rotate-key", new_partner)
        ),
    },
    "scoring": {
        **OPERATIONS,
        "GET /v1/campaigns": call("GET", "/v1/campaigns"),
        "GET /v1/criteria-sets": call("GET", "/v1/criteria-sets"),
        "GET /v1/criteria-sets/{version}": call("GET", "/v1/criteria-sets/none-1"),
        "GET /v1/evaluation-rounds": call("GET", "/v1/evaluation-rounds"),
        "GET /v1/evaluation-rounds/{round_id}": call("GET", "/v1/evaluation-rounds/{round}"),
        "GET /v1/evaluation-rounds/{round_id}/candidates": call(
            "GET", "/v1/evaluation-rounds/{round}/candidates"
        ),
        "GET /v1/evaluation-rounds/{round_id}/member-candidates": call(
            "GET", "/v1/evaluation-rounds/{round}/member-candidates"
        ),
        "GET /v1/evaluation-rounds/{round_id}/report": call(
            "GET", "/v1/evaluation-rounds/{round}/report"
        ),
        "GET /v1/evaluation-rounds:schedule": call("GET", "/v1/evaluation-rounds:schedule"),
        "GET /v1/indicators/{subject_type}/{subject_id}": call("GET", "/v1/indicators/team/{team}"),
        "GET /v1/rankings": call("GET", "/v1/rankings?unit={province}"),
        "GET /v1/reports/legacy-province/{code}": call(
            "GET", "/v1/reports/legacy-province/L-82?period=2026"
        ),
        "GET /v1/reports/scores": call("GET", "/v1/reports/scores?unit={province}"),
        "GET /v1/scores/{subject_type}/{subject_id}": call("GET", "/v1/scores/team/{team}"),
        "GET /v1/scores/{subject_type}/{subject_id}/history": call(
            "GET", "/v1/scores/team/{team}/history"
        ),
        "GET /v1/targets": call("GET", "/v1/targets?subject_type=commune&subject_id={commune}"),
        "POST /v1/campaigns": call("POST", "/v1/campaigns", campaign),
        "POST /v1/criteria-sets": call("POST", "/v1/criteria-sets", lambda s: {}),
        "POST /v1/criteria-sets/{version}:activate": call(
            "POST", "/v1/criteria-sets/none-1:activate"
        ),
        "POST /v1/recompute": call("POST", "/v1/recompute"),
        "GET /v1/recompute/{job_id}": call("GET", "/v1/recompute/{random}"),
        "PUT /v1/targets": call("PUT", "/v1/targets", target),
        "POST /v1/evaluation-rounds": call("POST", "/v1/evaluation-rounds", new_round),
        "POST /v1/evaluation-rounds/{round_id}:submit": call(
            "POST", "/v1/evaluation-rounds/{round}:submit"
        ),
        "POST /v1/evaluation-rounds/{round_id}:approve": call(
            "POST", "/v1/evaluation-rounds/{round}:approve"
        ),
        "POST /v1/evaluation-rounds/{round_id}:reopen": call(
            "POST", "/v1/evaluation-rounds/{round}:reopen", lambda s: REASON
        ),
    },
    "notifications": {
        **OPERATIONS,
        "GET /v1/alerts": listing("/v1/alerts?unit={commune}", hidden=True),
        "GET /v1/alerts/{alert_id}": call("GET", "/v1/alerts/{alert}"),
        "POST /v1/alerts/{alert_id}:ack": call("POST", "/v1/alerts/{alert}:ack"),
        "GET /v1/subscriptions": listing("/v1/subscriptions?limit=500"),
        "POST /v1/subscriptions": call("POST", "/v1/subscriptions", subscription),
        "DELETE /v1/subscriptions/{subscription_id}": fresh(
            "DELETE", "/v1/subscriptions/{id}", new_subscription
        ),
        "GET /v1/rules": call("GET", "/v1/rules"),
        "PUT /v1/rules": call(
            "PUT",
            "/v1/rules",
            lambda s: {"scope": s.province, "alert_type": "target_reached", "params": {}},
        ),
        "GET /v1/deliveries": call("GET", "/v1/deliveries"),
        "POST /v1/deliveries/{delivery_id}:redeliver": call(
            "POST", "/v1/deliveries/{random}:redeliver"
        ),
    },
}


async def _request(method: str, url: str, body: Any = None) -> Request:
    return Request(method, url, body)


# --------------------------------------------------------------------------- expectations


def actor_of(who: str) -> Actor:
    grant = PEOPLE[who]
    return OPERATOR_ACTOR if grant is None else Actor(subject=who, roles=(grant,))


def expected(rule: Rule, who: str, path: tuple[str, ...]) -> Expect:
    """What the matrix says `who` gets on an endpoint of `rule` acting in the unit of `path`."""
    if rule.public:
        return Expect.ALLOWED
    scope = scope_of(actor_of(who), rule.action) if rule.action is not None else None
    if scope is None or (rule.unit is UnitOf.NATIONAL and not scope.nationwide):
        return Expect.FORBIDDEN
    if rule.unit is UnitOf.NATIONAL or scope.covers(path):
        return Expect.ALLOWED
    return {
        UnitOf.RESOURCE: Expect.NOT_FOUND,
        UnitOf.BODY: Expect.FORBIDDEN,
        UnitOf.LIST: Expect.FILTERED,
    }[rule.unit]


def sides_of(rule: Rule) -> tuple[bool, ...]:
    """Inside and outside where the unit matters; once where it cannot."""
    return (True, False) if rule.unit in (UnitOf.RESOURCE, UnitOf.BODY, UnitOf.LIST) else (True,)


def check(
    reply: httpx.Response, expect: Expect, *, rule: Rule, case: Case, other: Side, what: str
) -> None:
    status = reply.status_code
    if expect is Expect.ALLOWED:
        hidden = rule.unit in (UnitOf.RESOURCE, UnitOf.LIST)  # its resources exist: 404 refuses
        refused = {401, 403} | ({404} if hidden else set())
        assert status not in refused, f"{what}: {status} {reply.text[:300]}"
    elif expect is Expect.FORBIDDEN:
        assert status == 403, f"{what}: {status} {reply.text[:300]}"
    elif expect is Expect.NOT_FOUND or case.named_unit_is_hidden:
        assert status == 404, f"{what}: {status} {reply.text[:300]}"
    else:
        assert status == 200, f"{what}: {status} {reply.text[:300]}"
        for marker in (other.commune, other.team["id"]):
            assert marker not in reply.text, f"{what}: a row of {marker} leaked"


# --------------------------------------------------------------------------- fixtures


async def make_side(
    stack: Stack, connection: asyncpg.Connection, *, province: str, commune: str
) -> Side:
    async with stack.http("teams") as teams, stack.http("scoring") as scoring:
        team = await teams.post(
            "/v1/teams", json={"code": f"RM-{tag()}", "name": "Tổ", "unit_code": commune},
            headers=OPERATOR,
        )  # fmt: skip
        assert team.status_code == 201, team.text
        member = await teams.post(
            f"/v1/teams/{team.json()['id']}/members",
            json={"full_name": "Nguyễn Văn A", "joined_on": "2022-04-01"},
            headers=OPERATOR,
        )
        assert member.status_code == 201, member.text
        period = f"20{40 + int(tag()[:2], 16) % 50}-Q1"

        async def opened() -> httpx.Response | None:
            reply = await scoring.post(
                "/v1/evaluation-rounds",
                json={"level": "commune", "unit_code": commune, "period": period,
                      "due_on": "2099-01-01"},
                headers=OPERATOR,
            )  # fmt: skip
            return reply if reply.status_code == 201 else None  # the unit not replicated yet

        round_ = await eventually(opened, timeout=60, interval=0.5, what="unit known to scoring")
        assert round_ is not None

    async def placed_in_notifications() -> bool:
        found = await connection.fetchval(
            "SELECT 1 FROM notifications.unit_paths WHERE code = $1", commune
        )
        return found is not None

    await eventually(placed_in_notifications, timeout=60, what="team known to notifications")
    alert_id = uuid.uuid4()
    await connection.execute(
        "INSERT INTO notifications.alerts (id, alert_type, dedupe_key, subject_type, subject_id,"
        " unit_path, status, summary, details, raised_at)"
        " VALUES ($1, 'team_inactive', $2, 'team', $3, $4, 'open', 'ma trận', '{}', now())",
        alert_id, f"rm:{alert_id}", team.json()["id"], [province, commune],
    )  # fmt: skip
    return Side(
        province=province,
        commune=commune,
        team=team.json(),
        member=member.json(),
        alert_id=str(alert_id),
        round_id=round_.json()["id"],
    )


@pytest_asyncio.fixture(scope="module")
async def ctx(stack: Stack, world: World, service_env: dict[str, str]) -> Ctx:
    connection = await asyncpg.connect(asyncpg_dsn(service_env["DATABASE_URL"]))
    try:
        inside = await make_side(stack, connection, province=DONG_THAP, commune=MY_THO)
        outside = await make_side(stack, connection, province=HA_NOI, commune=HOAN_KIEM)
    finally:
        await connection.close()
    async with stack.http("teams") as teams:
        units = await teams.get(
            "/v1/admin-units", params={"parent": DONG_THAP, "limit": 5}, headers=OPERATOR
        )
        neighbour = next(u["code"] for u in units.json()["items"] if u["code"] != MY_THO)
        dummy = await teams.post(
            "/v1/accounts",
            json={"username": f"rm{tag().lower()}x", "display_name": "Ai đó",
                  "roles": [{"role": "auditor"}]},
            headers=OPERATOR,
        )  # fmt: skip
        assert dummy.status_code == 201, dummy.text
        context = Ctx(stack, inside, outside, neighbour, dummy.json()["id"])
        for who, grant in PEOPLE.items():
            context.people[who] = OPERATOR if grant is None else await person_login(teams, grant)
    return context


# --------------------------------------------------------------------------- tests


def test_every_endpoint_has_a_rule_and_a_request(service_env: dict[str, str]) -> None:
    """A route needs a rule (or its service does not start) and a request here."""
    for service, app in built_apps(service_env).items():
        routes = {f"{method} {path}" for method, path, _ in api_routes(app)}
        assert routes == set(ENDPOINTS[service]), service
        assert routes == set(CASES[service]), (service, routes ^ set(CASES[service]))


def test_a_route_without_a_rule_stops_its_service(service_env: dict[str, str]) -> None:
    from teams import bootstrap
    from teams.settings import TeamsSettings

    unruled = APIRouter()

    @unruled.get("/v1/unruled")
    async def nobody_said_who_may() -> None:
        return None

    runtime = bootstrap.build_runtime(
        TeamsSettings(database_url=service_env["DATABASE_URL"], CDT_TRACES_EXPORTER="none")  # type: ignore[call-arg]
    )
    with pytest.raises(RuntimeError, match="GET /v1/unruled"):
        create_app(runtime=runtime, routers=[unruled], title="t", description="t")


@pytest.mark.parametrize("service", sorted(CASES))
async def test_every_endpoint_role_and_side_answers_as_the_matrix_says(
    ctx: Ctx, service: str
) -> None:
    walked = 0
    async with ctx.stack.http(service) as http:
        for endpoint, case in CASES[service].items():
            rule = ENDPOINTS[service][endpoint]
            for inside in sides_of(rule):
                side, other = ctx.side(inside), ctx.side(not inside)
                for who, headers in ctx.people.items():
                    request = await case.build(ctx, side)
                    reply = await http.request(
                        request.method,
                        request.url,
                        json=request.json,
                        content=request.content,
                        headers={**request.headers, **({} if rule.public else headers)},
                    )
                    where = "inside" if inside else "outside"
                    expect = expected(rule, who, case.at(side))
                    what = f"{who} {endpoint} {where} (expected {expect.value})"
                    check(reply, expect, rule=rule, case=case, other=other, what=what)
                    walked += 1
    print(f"\n[role matrix] {service}: {walked} requests answered as the matrix says")


# --------------------------------------------------------------------------- acceptance


async def test_a_commune_officer_cannot_write_in_the_neighbouring_commune(ctx: Ctx) -> None:
    officer = ctx.people["commune_officer"]
    neighbour = ctx.other_commune
    async with ctx.stack.http("teams") as teams, ctx.stack.http("scoring") as scoring:
        body = {"code": f"RM-{tag()}", "name": "Tổ láng giềng", "unit_code": neighbour}
        assert (await teams.post("/v1/teams", json=body, headers=officer)).status_code == 403
        own = {**body, "code": f"RM-{tag()}", "unit_code": MY_THO}
        assert (await teams.post("/v1/teams", json=own, headers=officer)).status_code == 201
        goal = {**target(ctx.inside), "subject_id": neighbour}
        assert (await scoring.put("/v1/targets", json=goal, headers=officer)).status_code == 403
        mine = await scoring.put("/v1/targets", json=target(ctx.inside), headers=officer)
        assert mine.status_code == 200, mine.text


async def test_a_team_leader_cannot_read_another_teams_inbox(ctx: Ctx) -> None:
    leader = ctx.people["team_leader"]
    async with ctx.stack.http("notifications") as notifications:
        own = await notifications.get("/v1/alerts", params={"unit": MY_THO}, headers=leader)
        assert own.status_code == 200
        assert ctx.inside.alert_id in {a["id"] for a in own.json()["items"]}
        other = await notifications.get("/v1/alerts", params={"unit": HOAN_KIEM}, headers=leader)
        assert other.status_code == 404
        one = await notifications.get(f"/v1/alerts/{ctx.outside.alert_id}", headers=leader)
        assert one.status_code == 404
        everything = await notifications.get("/v1/alerts", params={"limit": 500}, headers=leader)
        assert {tuple(a["unit_path"][:1]) for a in everything.json()["items"]} <= {(DONG_THAP,)}


async def test_an_auditor_reads_everything_and_writes_nothing(ctx: Ctx) -> None:
    auditor = ctx.people["auditor"]
    async with ctx.stack.http("teams") as teams, ctx.stack.http("scoring") as scoring:
        read = await teams.get(f"/v1/teams/{ctx.outside.team['id']}", headers=auditor)
        assert read.status_code == 200
        assert (await teams.get("/v1/audit", headers=auditor)).status_code == 200
        assert (
            await teams.post("/v1/teams", json=team_body(ctx.inside), headers=auditor)
        ).status_code == 403
        goal = await scoring.put("/v1/targets", json=target(ctx.inside), headers=auditor)
        assert goal.status_code == 403
    async with ctx.stack.http("notifications") as notifications:
        assert (await notifications.get("/v1/rules", headers=auditor)).status_code == 200
        assert (await notifications.get("/v1/deliveries", headers=auditor)).status_code == 200
        rule = {"scope": DONG_THAP, "alert_type": "target_reached", "params": {}}
        assert (await notifications.put("/v1/rules", json=rule, headers=auditor)).status_code == 403


async def test_a_province_officers_lists_and_counts_stay_in_their_province(ctx: Ctx) -> None:
    officer = ctx.people["province_officer"]
    async with ctx.stack.http("teams") as teams:
        listed = await teams.get("/v1/teams", params={"limit": 500}, headers=officer)
        assert listed.status_code == 200
        paths = {t["unit_path"]["province"] for t in listed.json()["items"]}
        assert paths == {DONG_THAP}, paths
        assert (
            await teams.get(f"/v1/admin-units/{HA_NOI}/coverage", headers=officer)
        ).status_code == 404
        mine = await teams.get(f"/v1/admin-units/{DONG_THAP}/coverage", headers=officer)
        assert mine.status_code == 200 and mine.json()["teams"] >= 1


async def test_a_person_with_several_grants_acts_in_each_within_its_role(ctx: Ctx) -> None:
    async with ctx.stack.http("teams") as teams:
        both = await person_login(
            teams, RoleGrant("commune_officer", MY_THO), RoleGrant("team_leader", HOAN_KIEM)
        )
        trained = {"course": "Kỹ năng số", "completed_on": "2026-01-10"}
        for side in (ctx.inside, ctx.outside):  # members: both roles may
            url = f"/v1/members/{side.member['id']}/trainings"
            reply = await teams.post(url, json=trained, headers=both)
            assert reply.status_code == 201, reply.text
        for side, status in ((ctx.inside, 201), (ctx.outside, 403)):  # teams: the officer only
            reply = await teams.post("/v1/teams", json=team_body(side), headers=both)
            assert reply.status_code == status, reply.text
        listed = await teams.get("/v1/teams", params={"limit": 500}, headers=both)
        # teams of other modules may sit in villages of these communes: the commune is the test
        communes = {t["unit_path"]["commune"] for t in listed.json()["items"]}
        assert communes == {MY_THO, HOAN_KIEM}, communes
