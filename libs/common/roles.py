"""Roles, actors and the permission matrix: who may do what, where (pure; `common.identity`
verifies tokens, `common.app.authorize` enforces this module on every request).

Two declarations make the matrix, and nothing else grants a permission:

- `ROLE_ACTIONS`: the actions each role may take, within the unit of its grant (a province or a
  commune code; a team leader's village or commune: their team's unit). `ministry_admin` and
  `auditor` are nationwide.
- `ENDPOINTS`: for every route of every service, the action it needs and where the unit it acts
  in comes from. A route missing here cannot start (`common.app.create_app` checks).

Unit codes are not prefixes of one another (a commune's code does not start with its
province's): a unit is inside a grant when the grant's unit is on the unit's path (its own code
and its ancestors' codes, province to village).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

MINISTRY_ADMIN: Final = "ministry_admin"
PROVINCE_OFFICER: Final = "province_officer"
COMMUNE_OFFICER: Final = "commune_officer"
TEAM_LEADER: Final = "team_leader"
AUDITOR: Final = "auditor"
ROLES: Final = (MINISTRY_ADMIN, PROVINCE_OFFICER, COMMUNE_OFFICER, TEAM_LEADER, AUDITOR)
# Granted without a unit; every other role acts only within the unit of its grant.
NATIONWIDE_ROLES: Final = frozenset({MINISTRY_ADMIN, AUDITOR})


class Action(StrEnum):
    """What a request asks to do."""

    READ = "read"  # the registry, activities, alerts and subscriptions
    MANAGE_TEAMS = "manage_teams"  # create, revise and dissolve teams
    MANAGE_MEMBERS = "manage_members"  # add and revise members, record their trainings
    PLAN = "plan"  # targets, campaigns and evaluation rounds
    MANAGE_PARTNERS = "manage_partners"  # partner apps and their keys
    MANAGE_SUBSCRIPTIONS = "manage_subscriptions"  # webhook subscriptions to alerts
    HANDLE_ALERTS = "handle_alerts"  # acknowledge alerts of the inbox
    READ_AUDIT = "read_audit"  # `GET /v1/audit` on every service
    # The ministry's own: accounts, signing keys, the unit registry, bulk imports, criteria
    # sets, alert rules, recomputes, the webhook delivery log.
    ADMINISTER = "administer"


OFFICER_ACTIONS: Final = frozenset(
    {
        Action.READ,
        Action.MANAGE_TEAMS,
        Action.MANAGE_MEMBERS,
        Action.PLAN,
        Action.MANAGE_PARTNERS,
        Action.MANAGE_SUBSCRIPTIONS,
        Action.HANDLE_ALERTS,
    }
)
ROLE_ACTIONS: Final[Mapping[str, frozenset[Action]]] = {
    MINISTRY_ADMIN: frozenset(Action),
    PROVINCE_OFFICER: OFFICER_ACTIONS,
    COMMUNE_OFFICER: OFFICER_ACTIONS,
    TEAM_LEADER: frozenset({Action.READ, Action.MANAGE_MEMBERS, Action.HANDLE_ALERTS}),
    AUDITOR: frozenset({Action.READ, Action.READ_AUDIT}),
}


class UnitOf(StrEnum):
    """Where an endpoint finds the unit a request acts in, and what "outside" answers."""

    NATIONAL = "national"  # no unit: only a nationwide grant (or the operator) may
    RESOURCE = "resource"  # the unit of the resource the path names; outside: 404
    BODY = "body"  # the unit the body names; outside: 403
    LIST = "list"  # rows outside the caller's units are left out; a named unit outside: 404
    NONE = "none"  # open to anyone, or to partner keys only: no person's grant is involved


@dataclass(frozen=True)
class Rule:
    action: Action | None  # None: no person's permission applies (public or partner-only)
    unit: UnitOf
    partner: bool = False  # partner keys may call it too, within their provinces
    public: bool = False  # no credential at all


PUBLIC: Final = Rule(None, UnitOf.NONE, public=True)
PARTNER_ONLY: Final = Rule(None, UnitOf.NONE, partner=True)


def _rule(action: Action, unit: UnitOf, *, partner: bool = False) -> Rule:
    return Rule(action, unit, partner=partner)


ADMIN: Final = _rule(Action.ADMINISTER, UnitOf.NATIONAL)
# The ministry's records read nationwide: administrators and auditors (an auditor reads
# everything), not officers.
NATIONAL_READ: Final = _rule(Action.READ, UnitOf.NATIONAL)
AUDIT_ROUTES: Final[Mapping[str, Rule]] = {
    "GET /v1/audit": _rule(Action.READ_AUDIT, UnitOf.NATIONAL),
    "GET /v1/audit:export": _rule(Action.READ_AUDIT, UnitOf.NATIONAL),
}
OPERATIONS_ROUTES: Final[Mapping[str, Rule]] = {
    "GET /healthz": PUBLIC,
    "GET /readyz": PUBLIC,
    "GET /metrics": PUBLIC,
    "GET /schemas/{ce_type}.json": PUBLIC,
}
READ_LIST_OR_PARTNER: Final = _rule(Action.READ, UnitOf.LIST, partner=True)
READ_ONE_OR_PARTNER: Final = _rule(Action.READ, UnitOf.RESOURCE, partner=True)

# Every route of every service (besides /openapi.json and /docs, which are not API routes).
ENDPOINTS: Final[Mapping[str, Mapping[str, Rule]]] = {
    "teams": {
        **OPERATIONS_ROUTES,
        **AUDIT_ROUTES,
        "GET /.well-known/jwks.json": PUBLIC,
        "GET /.well-known/openid-configuration": PUBLIC,
        "GET /v1/auth/disabled-subjects": PUBLIC,
        "POST /v1/auth/token": PUBLIC,  # the password is the credential (rate-limited)
        "POST /v1/invitations:redeem": PUBLIC,  # the one-time code is the credential
        "POST /v1/auth/keys:rotate": ADMIN,
        "POST /v1/accounts": ADMIN,
        "GET /v1/accounts/{account_id}": NATIONAL_READ,
        "POST /v1/accounts/{account_id}:disable": ADMIN,
        "GET /v1/admin-units": READ_LIST_OR_PARTNER,
        "GET /v1/admin-units/{code}": READ_ONE_OR_PARTNER,
        "GET /v1/admin-units/{code}/coverage": READ_ONE_OR_PARTNER,
        "GET /v1/admin-units:crosswalk": READ_LIST_OR_PARTNER,
        "POST /v1/admin-units": ADMIN,
        "POST /v1/admin-units/{code}:reparent": ADMIN,
        "POST /v1/admin-units/{code}:split": ADMIN,
        "POST /v1/admin-units:import": ADMIN,
        "POST /v1/admin-units:merge": ADMIN,
        "GET /v1/teams": READ_LIST_OR_PARTNER,
        "GET /v1/teams/{team_ref}": READ_ONE_OR_PARTNER,
        "GET /v1/teams/{team_ref}/members": READ_ONE_OR_PARTNER,
        "GET /v1/members": READ_LIST_OR_PARTNER,
        "GET /v1/members/{member_ref}": READ_ONE_OR_PARTNER,
        "POST /v1/teams": _rule(Action.MANAGE_TEAMS, UnitOf.BODY),
        "PATCH /v1/teams/{team_ref}": _rule(Action.MANAGE_TEAMS, UnitOf.RESOURCE),
        "POST /v1/teams/{team_ref}:dissolve": _rule(Action.MANAGE_TEAMS, UnitOf.RESOURCE),
        "POST /v1/teams/{team_ref}/members": _rule(Action.MANAGE_MEMBERS, UnitOf.RESOURCE),
        "PATCH /v1/members/{member_ref}": _rule(Action.MANAGE_MEMBERS, UnitOf.RESOURCE),
        "POST /v1/members/{member_ref}/trainings": _rule(Action.MANAGE_MEMBERS, UnitOf.RESOURCE),
        # A bulk body may name any unit in any row: the ministry's.
        "POST /v1/teams:bulk": ADMIN,
        "POST /v1/members:bulk": ADMIN,
    },
    "activities": {
        **OPERATIONS_ROUTES,
        **AUDIT_ROUTES,
        "GET /v1/activities": READ_LIST_OR_PARTNER,
        "GET /v1/activities:export": READ_LIST_OR_PARTNER,
        "POST /v1/activities": PARTNER_ONLY,  # activities are attributed to a partner app
        "POST /v1/activities:batch": PARTNER_ONLY,
        "POST /v1/activities/{activity_id}:void": _rule(
            Action.ADMINISTER, UnitOf.NATIONAL, partner=True
        ),
        # A partner's units are its provinces: an officer manages partners of their province.
        "POST /v1/partners": _rule(Action.MANAGE_PARTNERS, UnitOf.BODY),
        "DELETE /v1/partners/{partner_id}": _rule(Action.MANAGE_PARTNERS, UnitOf.RESOURCE),
        "POST /v1/partners/{partner_id}:rotate-key": _rule(Action.MANAGE_PARTNERS, UnitOf.RESOURCE),
    },
    "scoring": {
        **OPERATIONS_ROUTES,
        **AUDIT_ROUTES,
        # Published scores, rankings, reports and plans: aggregates without personal data.
        **{
            f"GET {path}": PUBLIC
            for path in (
                "/v1/campaigns",
                "/v1/criteria-sets",
                "/v1/criteria-sets/{version}",
                "/v1/evaluation-rounds",
                "/v1/evaluation-rounds/{round_id}",
                "/v1/evaluation-rounds/{round_id}/candidates",
                "/v1/evaluation-rounds/{round_id}/member-candidates",
                "/v1/evaluation-rounds/{round_id}/report",
                "/v1/evaluation-rounds:schedule",
                "/v1/indicators/{subject_type}/{subject_id}",
                "/v1/rankings",
                "/v1/reports/legacy-province/{code}",
                "/v1/reports/scores",
                "/v1/scores/{subject_type}/{subject_id}",
                "/v1/scores/{subject_type}/{subject_id}/history",
                "/v1/targets",
            )
        },
        "POST /v1/campaigns": _rule(Action.PLAN, UnitOf.BODY),  # no units: nationwide
        "POST /v1/criteria-sets": ADMIN,
        "POST /v1/criteria-sets/{version}:activate": ADMIN,
        "POST /v1/recompute": ADMIN,
        "GET /v1/recompute/{job_id}": NATIONAL_READ,
        "PUT /v1/targets": _rule(Action.PLAN, UnitOf.BODY),
        "POST /v1/evaluation-rounds": _rule(Action.PLAN, UnitOf.BODY),
        "POST /v1/evaluation-rounds/{round_id}:submit": _rule(Action.PLAN, UnitOf.RESOURCE),
        "POST /v1/evaluation-rounds/{round_id}:approve": _rule(Action.PLAN, UnitOf.RESOURCE),
        "POST /v1/evaluation-rounds/{round_id}:reopen": _rule(Action.PLAN, UnitOf.RESOURCE),
    },
    "notifications": {
        **OPERATIONS_ROUTES,
        **AUDIT_ROUTES,
        "GET /v1/alerts": _rule(Action.READ, UnitOf.LIST),
        "GET /v1/alerts/{alert_id}": _rule(Action.READ, UnitOf.RESOURCE),
        "POST /v1/alerts/{alert_id}:ack": _rule(Action.HANDLE_ALERTS, UnitOf.RESOURCE),
        "GET /v1/subscriptions": _rule(Action.READ, UnitOf.LIST),
        "POST /v1/subscriptions": _rule(Action.MANAGE_SUBSCRIPTIONS, UnitOf.BODY),
        "DELETE /v1/subscriptions/{subscription_id}": _rule(
            Action.MANAGE_SUBSCRIPTIONS, UnitOf.RESOURCE
        ),
        "GET /v1/rules": NATIONAL_READ,
        "PUT /v1/rules": ADMIN,
        "GET /v1/deliveries": NATIONAL_READ,
        "POST /v1/deliveries/{delivery_id}:redeliver": ADMIN,
    },
}


@dataclass(frozen=True)
class RoleGrant:
    role: str
    unit: str | None = None  # None: nationwide


@dataclass(frozen=True)
class Actor:
    """Whoever a request acts as: a person from a verified token, or the platform operator."""

    subject: str
    name: str | None = None
    roles: tuple[RoleGrant, ...] = ()
    operator: bool = False  # the break-glass operator token: every permission

    def has_role(self, role: str) -> bool:
        return any(grant.role == role for grant in self.roles)


OPERATOR_ACTOR: Final = Actor(subject="operator", name="platform operator", operator=True)


@dataclass(frozen=True)
class Scope:
    """The units an action is allowed in: `units` None is nationwide."""

    units: frozenset[str] | None

    @property
    def nationwide(self) -> bool:
        return self.units is None

    def covers(self, path: Iterable[str | None]) -> bool:
        """Whether a unit, by the codes of its path (province to itself), lies in the scope."""
        return self.units is None or any(code in self.units for code in path if code)


NATIONWIDE: Final = Scope(None)


def scope_of(actor: Actor, action: Action) -> Scope | None:
    """Where `actor` may do `action`; None when no grant of theirs permits it anywhere."""
    if actor.operator:
        return NATIONWIDE
    units: set[str] = set()
    for grant in actor.roles:
        if action not in ROLE_ACTIONS.get(grant.role, frozenset()):
            continue
        if grant.role in NATIONWIDE_ROLES:
            return NATIONWIDE
        if grant.unit is not None:  # a scoped role without a unit grants nothing
            units.add(grant.unit)
    return Scope(frozenset(units)) if units else None


# --- the matrix as the README shows it (a test keeps the README equal to this) ---------------

ACTION_NOTES: Final[Mapping[Action, str]] = {
    Action.READ: (
        "read teams, members, units, activities, alerts, subscriptions; nationwide only:"
        " accounts, alert rules, the delivery log, recompute jobs"
    ),
    Action.MANAGE_TEAMS: "create, revise, dissolve teams",
    Action.MANAGE_MEMBERS: "add, revise members; record trainings",
    Action.PLAN: "targets, campaigns, evaluation rounds",
    Action.MANAGE_PARTNERS: "create partner apps, rotate and revoke their keys",
    Action.MANAGE_SUBSCRIPTIONS: "webhook subscriptions to alerts",
    Action.HANDLE_ALERTS: "acknowledge alerts",
    Action.READ_AUDIT: "read and export the audit trail",
    Action.ADMINISTER: (
        "accounts, signing keys, the unit registry, bulk imports, criteria sets, alert rules,"
        " recomputes, the delivery log, voiding activities"
    ),
}
UNIT_NOTES: Final[Mapping[UnitOf, str]] = {
    UnitOf.NATIONAL: "nationwide grants only; 403 otherwise",
    UnitOf.RESOURCE: "the unit of the resource in the path; outside: 404",
    UnitOf.BODY: "the unit(s) the body names; outside: 403",
    UnitOf.LIST: "rows outside are left out (counts too); a named unit outside: 404",
    UnitOf.NONE: "",
}


def _where(role: str) -> str:
    return "nationwide" if role in NATIONWIDE_ROLES else "in their unit"


def render_matrix() -> str:
    """The role matrix and the endpoint rules as Markdown tables."""
    roles_head = "| Action | " + " | ".join(f"`{r}`" for r in ROLES) + " |"
    lines = [roles_head, "|---" * (len(ROLES) + 1) + "|"]
    for action in Action:
        cells = [_where(r) if action in ROLE_ACTIONS[r] else "–" for r in ROLES]
        lines.append(f"| `{action}`: {ACTION_NOTES[action]} | " + " | ".join(cells) + " |")
    lines += ["", "| Service | Endpoint | Action | Unit |", "|---|---|---|---|"]
    for service, rules in ENDPOINTS.items():
        for endpoint, rule in sorted(rules.items(), key=lambda item: item[0].split(" ")[::-1]):
            if rule.public:
                needs, unit = "public", ""
            elif rule.action is None:
                needs, unit = "partner key only", ""
            else:
                needs = f"`{rule.action}`" + (" or a partner key" if rule.partner else "")
                unit = UNIT_NOTES[rule.unit]
            lines.append(f"| {service} | `{endpoint}` | {needs} | {unit} |")
    return "\n".join(lines) + "\n"
