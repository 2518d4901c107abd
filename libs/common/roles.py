"""Roles and actors: who acts and what they may do (pure; `common.identity` verifies tokens)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

# The roles of issue #24. `ministry_admin` may do everything; the others are scoped to a unit
# (a province or commune code; a team leader's team unit) and get their permissions from the
# role matrix, a later step: until then they may only do what `permits` below allows.
MINISTRY_ADMIN: Final = "ministry_admin"
PROVINCE_OFFICER: Final = "province_officer"
COMMUNE_OFFICER: Final = "commune_officer"
TEAM_LEADER: Final = "team_leader"
AUDITOR: Final = "auditor"
ROLES: Final = (MINISTRY_ADMIN, PROVINCE_OFFICER, COMMUNE_OFFICER, TEAM_LEADER, AUDITOR)

# What a caller may ask for. Today the only action is "operate": every write that was
# operator-only (and stays so for other roles until the role matrix lands).
OPERATE: Final = "operate"
READ_AUDIT: Final = "read_audit"  # `GET /v1/audit` on every service


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


# The role matrix's seam: what each scoped role may do. Empty until the matrix of issue #24
# lands, so those roles get 403 on every operator-only write.
ROLE_ACTIONS: Final[Mapping[str, frozenset[str]]] = {
    PROVINCE_OFFICER: frozenset(),
    COMMUNE_OFFICER: frozenset(),
    TEAM_LEADER: frozenset(),
    AUDITOR: frozenset({READ_AUDIT}),
}


def permits(actor: Actor, action: str) -> bool:
    """The one place deciding whether `actor` may do `action`."""
    if actor.operator or actor.has_role(MINISTRY_ADMIN):
        return True
    return any(action in ROLE_ACTIONS.get(grant.role, frozenset()) for grant in actor.roles)
