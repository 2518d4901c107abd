"""Teams domain: pure rules, no I/O."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Literal
from uuid import UUID

from uuid_utils.compat import uuid7

from common.contracts.teams import (
    AdminUnitChanged,
    MemberChanged,
    TeamChanged,
    TeamStatus,
    UnitLevel,
    UnitPath,
)
from common.i18n import Message, Text, _, level_name
from common.roles import COMMUNE_OFFICER, PROVINCE_OFFICER, ROLES, TEAM_LEADER, RoleGrant, Scope

Role = Literal["leader", "deputy", "member"]
Affiliation = Literal[
    "residential_group_leader",
    "area_police",
    "youth_union",
    "enterprise",
    "teacher",
    "health_worker",
    "resident",
    "other",
]
UnitChange = Literal["created", "updated", "merged", "split", "reparented", "retired"]

LEVELS: tuple[UnitLevel, ...] = ("province", "district", "commune", "village")
# Which level a unit's parent may have (districts exist only in the pre-2025 three tiers).
ALLOWED_PARENTS: dict[str, frozenset[str | None]] = {
    "province": frozenset({None}),
    "district": frozenset({"province"}),
    "commune": frozenset({"province", "district"}),
    "village": frozenset({"commune"}),
}
TEAM_UNIT_LEVELS = frozenset({"commune", "village"})
PATH_SEPARATOR = "/"


class DomainError(ValueError):
    """A rule of the registry is broken; `field` names the offending input where there is one."""

    def __init__(self, message: Text, *, field: str | None = None, conflict: bool = False) -> None:
        super().__init__(str(message))
        self.message = message  # rendered in the reader's language where it becomes a problem
        self.field = field
        self.conflict = conflict


# --- administrative units -------------------------------------------------------------------


@dataclass(frozen=True)
class AdminUnit:
    code: str
    name: str
    level: UnitLevel
    parent_code: str | None
    path: str
    valid_from: date | None
    valid_to: date | None
    replaced_by: tuple[str, ...]
    version: int

    @property
    def ancestors(self) -> list[str]:
        """Codes from the root down to this unit itself."""
        return self.path.split(PATH_SEPARATOR)

    def is_current(self, *, today: date) -> bool:
        return self.valid_to is None or self.valid_to >= today

    def changed_event(
        self, *, unit_path: UnitPath, change: UnitChange, at: datetime | None = None
    ) -> AdminUnitChanged:
        return AdminUnitChanged(
            code=self.code,
            name=self.name,
            level=self.level,
            parent_code=self.parent_code,
            path=unit_path,
            valid_from=self.valid_from,
            valid_to=self.valid_to,
            replaced_by=list(self.replaced_by),
            change=change,
            version=self.version,
            changed_at=at or datetime.now(UTC),
        )


def check_parent(*, level: str, parent_level: str | None) -> None:
    """A unit's parent must sit on the level directly above it (province has none)."""
    allowed = ALLOWED_PARENTS[level]
    if parent_level not in allowed:
        if parent_level is None:
            raise DomainError(
                _("A {level} needs a parent unit.", level=level_name(level)), field="parent_code"
            )
        raise DomainError(
            _(
                "A {level} cannot sit under a {parent_level} (expected {wanted}).",
                level=level_name(level),
                parent_level=level_name(parent_level),
                wanted=_either(sorted(a for a in allowed if a)),
            ),
            field="parent_code",
        )


def _either(levels: list[str]) -> Message | str:
    """ "village or commune", in the reader's language."""
    if not levels:
        return _("no parent")
    if len(levels) == 1:
        return level_name(levels[0])
    return _(
        "{first} or {second}",
        first=level_name(levels[0]),
        second=_either(levels[1:]),
    )


def child_path(parent_path: str | None, code: str) -> str:
    return code if parent_path is None else f"{parent_path}{PATH_SEPARATOR}{code}"


def check_no_cycle(*, unit_code: str, new_parent_path: str) -> None:
    if unit_code in new_parent_path.split(PATH_SEPARATOR):
        raise DomainError(
            _("Moving {code} under this parent would create a cycle.", code=unit_code),
            field="parent_code",
            conflict=True,
        )


def unit_path_of(path: str, levels: Mapping[str, str]) -> UnitPath:
    """The event's UnitPath from a materialised path and the levels of the codes on it."""
    by_level: dict[str, str] = {}
    for code in path.split(PATH_SEPARATOR):
        level = levels.get(code)
        if level is not None:
            by_level[level] = code
    return UnitPath(
        province=by_level.get("province", path.split(PATH_SEPARATOR, maxsplit=1)[0]),
        district=by_level.get("district"),
        commune=by_level.get("commune"),
        village=by_level.get("village"),
    )


def retirement_date(effective_on: date) -> date:
    """A replaced unit is valid up to the day before its successor."""
    return effective_on - timedelta(days=1)


def check_team_unit(unit: AdminUnit | None, *, code: str, today: date) -> AdminUnit:
    if unit is None:
        raise DomainError(_("Unknown unit {code!r}.", code=code), field="unit_code")
    if unit.level not in TEAM_UNIT_LEVELS:
        raise DomainError(
            _(
                "A team belongs to a village or a commune, not a {level}.",
                level=level_name(unit.level),
            ),
            field="unit_code",
        )
    if not unit.is_current(today=today):
        replaced_on = str(unit.valid_to)
        raise DomainError(
            _(
                "Unit {code!r} was replaced on {date} by {codes}.",
                code=code,
                date=replaced_on,
                codes=", ".join(unit.replaced_by),
            )
            if unit.replaced_by
            else _("Unit {code!r} was replaced on {date}.", code=code, date=replaced_on),
            field="unit_code",
        )
    return unit


# --- teams ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Team:
    id: UUID
    code: str
    name: str
    unit_code: str
    status: TeamStatus
    established_on: date | None
    decision_no: str | None
    version: int
    dissolved_on: date | None = None

    @classmethod
    def establish(
        cls,
        *,
        code: str,
        name: str,
        unit_code: str,
        established_on: date | None,
        decision_no: str | None,
    ) -> Team:
        return cls(
            id=uuid7(),
            code=code,
            name=name,
            unit_code=unit_code,
            status="active",
            established_on=established_on,
            decision_no=decision_no,
            version=1,
        )

    def renamed(self, name: str) -> Team:
        return replace(self, name=name, version=self.version + 1)

    def revised(self, **changes: object) -> Team:
        """A new version with the given fields changed (no-op changes keep the version)."""
        current = {k: getattr(self, k) for k in changes}
        if current == changes:
            return self
        if self.status == "dissolved":
            raise DomainError(_("Team {code} is dissolved.", code=self.code), conflict=True)
        return replace(self, **changes, version=self.version + 1)  # type: ignore[arg-type]

    def dissolve(self, *, on: date) -> Team:
        if self.status == "dissolved":
            raise DomainError(_("Team {code} is already dissolved.", code=self.code), conflict=True)
        if self.established_on is not None and on < self.established_on:
            raise DomainError(
                _("A team cannot be dissolved before it was established."), field="dissolved_on"
            )
        return replace(self, status="dissolved", dissolved_on=on, version=self.version + 1)

    def check_accepts_members(self) -> None:
        if self.status == "dissolved":
            raise DomainError(
                _("Team {code} is dissolved and takes no new members.", code=self.code),
                conflict=True,
            )

    def changed_event(self, unit_path: UnitPath | None = None) -> TeamChanged:
        return TeamChanged(
            id=self.id,
            code=self.code,
            name=self.name,
            unit_code=self.unit_code,
            unit_path=unit_path,
            status=self.status,
            established_on=self.established_on,
            dissolved_on=self.dissolved_on,
            decision_no=self.decision_no,
            version=self.version,
            changed_at=datetime.now(UTC),
        )


@dataclass(frozen=True)
class SizeBounds:
    minimum: int = 4
    maximum: int = 9


@dataclass(frozen=True)
class TeamHealth:
    size: int
    leaders: int
    trained: int
    issues: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.issues


def team_health(*, size: int, leaders: int, trained: int, bounds: SizeBounds) -> TeamHealth:
    """The letter's 4-9 members with a leader and training: reported, never enforced."""
    issues: list[str] = []
    if size < bounds.minimum:
        issues.append("too_few_members")
    if size > bounds.maximum:
        issues.append("too_many_members")
    if leaders == 0:
        issues.append("no_leader")
    if leaders > 1:
        issues.append("several_leaders")
    if trained == 0:
        issues.append("no_trained_member")
    return TeamHealth(size=size, leaders=leaders, trained=trained, issues=tuple(issues))


# --- members --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    id: UUID
    code: str | None
    team_id: UUID
    full_name: str
    role: Role
    affiliation: Affiliation
    enterprise_name: str | None
    phone: str | None
    joined_on: date
    left_on: date | None
    trained: bool
    removed: bool
    version: int

    @classmethod
    def join(
        cls,
        *,
        team: Team,
        code: str | None,
        full_name: str,
        role: Role,
        affiliation: Affiliation,
        enterprise_name: str | None,
        phone: str | None,
        joined_on: date,
        left_on: date | None,
    ) -> Member:
        team.check_accepts_members()
        check_membership_dates(joined_on=joined_on, left_on=left_on)
        return cls(
            id=uuid7(),
            code=code,
            team_id=team.id,
            full_name=full_name,
            role=role,
            affiliation=affiliation,
            enterprise_name=enterprise_name,
            phone=phone,
            joined_on=joined_on,
            left_on=left_on,
            trained=False,
            removed=False,
            version=1,
        )

    @property
    def active(self) -> bool:
        return not self.removed and self.left_on is None

    def revised(self, **changes: object) -> Member:
        current = {k: getattr(self, k) for k in changes}
        if current == changes:
            return self
        updated = replace(self, **changes, version=self.version + 1)  # type: ignore[arg-type]
        check_membership_dates(joined_on=updated.joined_on, left_on=updated.left_on)
        return updated

    def trained_now(self) -> Member:
        return self if self.trained else replace(self, trained=True, version=self.version + 1)

    def changed_event(self) -> MemberChanged:
        # The phone number never leaves the service: not in events, not in logs.
        return MemberChanged(
            id=self.id,
            team_id=self.team_id,
            code=self.code,
            role=self.role,
            affiliation=self.affiliation,
            joined_on=self.joined_on,
            left_on=self.left_on,
            trained=self.trained,
            removed=self.removed,
            version=self.version,
            changed_at=datetime.now(UTC),
        )


def check_membership_dates(*, joined_on: date, left_on: date | None) -> None:
    if left_on is not None and left_on < joined_on:
        raise DomainError(_("left_on is before joined_on."), field="left_on")


def mask_phone(phone: str | None) -> str | None:
    """Keep the first three and last two digits: enough to recognise, not to call."""
    if phone is None:
        return None
    if len(phone) <= 5:
        return "*" * len(phone)
    return phone[:3] + "*" * (len(phone) - 5) + phone[-2:]


def duplicates(keys: Iterable[str]) -> dict[int, int]:
    """Index of each repeated key -> index of its first occurrence (bulk rows upsert by key)."""
    first: dict[str, int] = {}
    repeated: dict[int, int] = {}
    for index, key in enumerate(keys):
        if key in first:
            repeated[index] = first[key]
        else:
            first[key] = index
    return repeated


# --- who reads: the operator, a person within their units, a partner within its provinces ----

PARTNER_KEY_PREFIX = "cdtp"
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class Reader:
    """Who is reading: where they may read (`scope`) and whether members' phone numbers are
    shown (to those who manage the members: the operator, administrators, officers, leaders)."""

    scope: Scope
    sees_phones: bool = False

    @property
    def units(self) -> frozenset[str] | None:
        return self.scope.units

    def may_see(self, path: str) -> bool:
        """Whether a unit (by its materialised path) lies within the reader's scope."""
        return self.scope.covers(path.split(PATH_SEPARATOR))


def partner_key_lookup(token: str) -> str | None:
    """The public lookup part of a well-formed partner key (`cdtp_<12 hex>_<secret>`)."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != PARTNER_KEY_PREFIX:
        return None
    lookup, secret = parts[1], parts[2]
    if len(lookup) != 12 or not set(lookup) <= _HEX or not 20 <= len(secret) <= 100:
        return None
    return lookup


def partner_key_matches(token: str, *, key_sha256: str) -> bool:
    """Constant-time comparison of the key's SHA-256 with the replicated hex digest."""
    digest = hashlib.sha256(token.encode()).hexdigest()
    return hmac.compare_digest(digest.encode(), key_sha256.lower().encode())


# --- accounts and access tokens (the local issuer) ----------------------------------------

USERNAME_PATTERN = r"^[a-z0-9][a-z0-9._@-]{2,63}$"
PASSWORD_MIN_LENGTH = 12
PASSWORD_MAX_LENGTH = 256
INVITATION_PREFIX = "cdti_"
# Roles held for a unit name it (a province, a commune, a team leader's commune or village);
# the ministry's administrators and auditors are nationwide.
SCOPED_ROLES = frozenset({PROVINCE_OFFICER, COMMUNE_OFFICER, TEAM_LEADER})


@dataclass(frozen=True)
class Account:
    id: UUID
    username: str
    display_name: str
    roles: tuple[RoleGrant, ...]
    disabled: bool
    has_password: bool


def check_roles(grants: Iterable[RoleGrant]) -> tuple[RoleGrant, ...]:
    """Known roles, a unit exactly where the role is scoped, no duplicates."""
    result: list[RoleGrant] = []
    for grant in grants:
        if grant.role not in ROLES:
            raise DomainError(_("Unknown role {role!r}.", role=grant.role), field="roles")
        if (grant.role in SCOPED_ROLES) != (grant.unit is not None):
            need = (
                _("The role {role} needs a unit.", role=grant.role)
                if grant.role in SCOPED_ROLES
                else _("The role {role} is nationwide: no unit.", role=grant.role)
            )
            raise DomainError(need, field="roles")
        if grant in result:
            raise DomainError(_("The role {role} is given twice.", role=grant.role), field="roles")
        result.append(grant)
    if not result:
        raise DomainError(_("An account needs at least one role."), field="roles")
    return tuple(result)


def check_password(password: str, *, username: str) -> None:
    if not PASSWORD_MIN_LENGTH <= len(password) <= PASSWORD_MAX_LENGTH:
        raise DomainError(
            _(
                "A password has {min} to {max} characters.",
                min=PASSWORD_MIN_LENGTH,
                max=PASSWORD_MAX_LENGTH,
            ),
            field="password",
        )
    if username.lower() in password.lower():
        raise DomainError(_("A password may not contain the username."), field="password")


def new_invitation_code() -> str:
    """256 random bits, shown once; only its SHA-256 is kept."""
    return INVITATION_PREFIX + secrets.token_urlsafe(32)


def invitation_digest(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def access_claims(
    account: Account, *, issuer: str, audience: str, now: datetime, ttl_seconds: int
) -> dict[str, object]:
    issued = int(now.timestamp())
    return {
        "iss": issuer,
        "aud": audience,
        "sub": str(account.id),
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl_seconds,
        "jti": str(uuid7()),
        "preferred_username": account.username,
        "name": account.display_name,
        "roles": [{"role": g.role, "unit": g.unit} for g in account.roles],
    }


def key_published(
    *, retired_at: datetime | None, now: datetime, token_ttl_seconds: int, leeway_seconds: float
) -> bool:
    """A retired key stays in the JWKS until every token it signed has expired."""
    if retired_at is None:
        return True
    return now - retired_at < timedelta(seconds=token_ttl_seconds + leeway_seconds)
