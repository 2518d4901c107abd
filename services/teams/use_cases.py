"""Use cases shared by the HTTP API and the CLI: bulk batches and re-organisations.

Each bulk batch is one unit of work: its good rows and their events commit together; its bad
rows are reported and touch nothing. Batches commit one after another, so a client that is cut
off mid-stream keeps the batches already committed and can safely re-send (upserts by code).
"""

from __future__ import annotations

import asyncio
import functools
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from jwt.algorithms import ECAlgorithm
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from uuid_utils.compat import uuid7

from common.db import UnitOfWork
from common.envelope import OutboundEvent
from common.i18n import _, level_name
from common.roles import RoleGrant
from common.runtime import ServiceRuntime
from teams import adapters
from teams.adapters import MemberRepository, TeamRepository, UnitRepository
from teams.domain import (
    Account,
    AdminUnit,
    DomainError,
    Team,
    UnitChange,
    access_claims,
    check_membership_dates,
    check_no_cycle,
    check_parent,
    check_password,
    check_roles,
    check_team_unit,
    child_path,
    duplicates,
    invitation_digest,
    key_published,
    new_invitation_code,
    retirement_date,
    unit_path_of,
)
from teams.legacy_source import SOURCE_NAME as LEGACY_SOURCE
from teams.legacy_source import LegacyUnit
from teams.rows import BulkReport, MemberRow, RawRecord, RowError, TeamRow, UnitRow, row_errors

SOURCE = "/cdt/teams"
DEFAULT_BATCH_SIZE = 1_000
M = TypeVar("M", bound=BaseModel)


@dataclass
class BatchOutcome:
    created: int = 0
    updated: int = 0
    errors: list[RowError] = field(default_factory=list)


BatchApplier = Callable[[UnitOfWork, list[tuple[int, M]]], Awaitable[BatchOutcome]]


def today() -> date:
    return datetime.now(UTC).date()


async def run_bulk(
    runtime: ServiceRuntime,
    records: AsyncIterator[RawRecord],
    *,
    schema: type[M],
    apply: BatchApplier[M],
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_progress: Callable[[BulkReport], None] | None = None,
) -> BulkReport:
    report = BulkReport()
    batch: list[tuple[int, M]] = []

    async def flush() -> None:
        accepted = len(batch)
        async with runtime.unit_of_work() as uow:
            outcome = await apply(uow, batch)
            await uow.commit()
        report.created += outcome.created
        report.updated += outcome.updated
        report.unchanged += accepted - len({e.row for e in outcome.errors})
        report.unchanged -= outcome.created + outcome.updated
        report.reject(outcome.errors)
        batch.clear()
        if on_progress is not None:
            on_progress(report)

    async for raw in records:
        report.rows += 1
        if raw.error is not None or raw.data is None:
            report.reject([RowError(raw.row, None, raw.error or "Empty record.")])
            continue
        try:
            batch.append((raw.row, schema.model_validate(raw.data)))
        except ValidationError as exc:
            report.reject(row_errors(raw.row, exc, headers=raw.headers))
            continue
        except (TypeError, ValueError):  # a shape the schema did not foresee: still per row
            report.reject([RowError(raw.row, None, "Invalid row.")])
            continue
        if len(batch) >= batch_size:
            await flush()
    if batch:
        await flush()
    return report


def _dedupe(batch: Sequence[tuple[int, Any]], key: Callable[[Any], str]) -> list[RowError]:
    repeated = duplicates(key(model) for _, model in batch)
    return [
        RowError(batch[i][0], "code", f"Repeats the code of row {batch[first][0]}.")
        for i, first in repeated.items()
    ]


# --- units ----------------------------------------------------------------------------------


async def apply_units(
    uow: UnitOfWork,
    batch: list[tuple[int, UnitRow]],
    *,
    source: str = "import",
    successors: Mapping[str, Sequence[str]] | None = None,
) -> BatchOutcome:
    """Upsert units row by row. `successors` (code -> the current units its area became) is
    the legacy crosswalk: given, it is written to each row's `replaced_by`."""
    repo = UnitRepository(uow.session)
    errors = _dedupe(batch, lambda m: m.code)
    skip = {e.row for e in errors}
    wanted = {m.code for _, m in batch} | {m.parent_code for _, m in batch if m.parent_code}
    known = await repo.get_many(wanted)
    accepted: list[dict[str, Any]] = []
    for row_no, model in batch:
        if row_no in skip:
            continue
        try:
            accepted.append(_unit_row(model, known))
        except DomainError as exc:
            errors.append(RowError(row_no, exc.field, str(exc)))
            continue
        row = accepted[-1]
        # Later rows of the same batch may hang under this one.
        known[model.code] = known.get(model.code) or AdminUnit(
            code=model.code,
            name=model.name,
            level=model.level,
            parent_code=model.parent_code,
            path=row["path"],
            valid_from=model.valid_from,
            valid_to=model.valid_to,
            replaced_by=(),
            version=0,
        )
    if successors is not None:
        for row in accepted:
            row["replaced_by"] = list(successors.get(row["code"], ()))
    changed = await repo.upsert(accepted, source=source, successors=successors is not None)
    on = today()
    await publish_units(uow, changed, change=lambda u: _imported_change(u, on))
    created = sum(1 for u in changed if u.version == 1)
    return BatchOutcome(created=created, updated=len(changed) - created, errors=errors)


def _imported_change(unit: AdminUnit, on: date) -> UnitChange:
    """A unit imported already past its `valid_to` is published as retired: consumers must not
    count it among the current units (scoring's schedules and coverage do not)."""
    if not unit.is_current(today=on):
        return "retired"
    return "created" if unit.version == 1 else "updated"


async def import_legacy_units(
    uow: UnitOfWork, units: Sequence[LegacyUnit], *, new_parents: Mapping[str, str]
) -> BatchOutcome:
    """The 63-province units, retired, with their crosswalk to the current communes: in
    `replaced_by` (published, so scoring learns it from the topic) and in `unit_crosswalk`
    (`GET /v1/admin-units:crosswalk`). Idempotent: a repeated import changes nothing."""
    rows = [(i + 1, UnitRow.model_validate(u.row())) for i, u in enumerate(units)]
    outcome = await apply_units(
        uow,
        rows,
        source=LEGACY_SOURCE,
        successors={u.code: u.replaced_by for u in units},
    )
    await UnitRepository(uow.session).record_crosswalk_once(
        [row for u in units for row in u.crosswalk(new_parents)]
    )
    return outcome


def _unit_row(model: UnitRow, known: dict[str, AdminUnit]) -> dict[str, Any]:
    existing = known.get(model.code)
    if existing is not None and existing.version > 0:
        if existing.level != model.level:
            raise DomainError(
                _(
                    "Unit {code} exists as a {level}; levels do not change.",
                    code=model.code,
                    level=level_name(existing.level),
                ),
                field="level",
            )
        if existing.parent_code != model.parent_code:
            raise DomainError(
                _(
                    "Unit {code} exists under {parent}; move it with"
                    " POST /v1/admin-units/{{code}}:reparent.",
                    code=model.code,
                    parent=existing.parent_code,
                ),
                field="parent_code",
            )
    parent = known.get(model.parent_code) if model.parent_code else None
    if model.parent_code and parent is None:
        raise DomainError(
            _("Unknown parent unit {code!r}.", code=model.parent_code), field="parent_code"
        )
    check_parent(level=model.level, parent_level=parent.level if parent else None)
    if model.valid_from and model.valid_to and model.valid_to < model.valid_from:
        raise DomainError(_("valid_to is before valid_from."), field="valid_to")
    path = existing.path if existing else child_path(parent.path if parent else None, model.code)
    return {**model.model_dump(), "path": path}


async def publish_units(
    uow: UnitOfWork, units: Sequence[AdminUnit], *, change: Callable[[AdminUnit], UnitChange]
) -> None:
    if not units:
        return
    repo = UnitRepository(uow.session)
    ancestors = {code for unit in units for code in unit.ancestors}
    levels: dict[str, str] = {unit.code: unit.level for unit in units}
    levels.update(await repo.levels_of(ancestors - set(levels)))
    now = datetime.now(UTC)
    await uow.publish_now(
        [
            OutboundEvent.of(
                unit.changed_event(
                    unit_path=unit_path_of(unit.path, levels), change=change(unit), at=now
                ),
                source=SOURCE,
                subject=unit.code,
            )
            for unit in units
        ],
    )


# --- teams ----------------------------------------------------------------------------------


async def publish_teams(uow: UnitOfWork, teams: Iterable[Team]) -> None:
    teams = list(teams)
    paths = await UnitRepository(uow.session).unit_paths(t.unit_code for t in teams)
    await uow.publish_now(
        [
            OutboundEvent.of(
                team.changed_event(paths.get(team.unit_code)), source=SOURCE, subject=str(team.id)
            )
            for team in teams
        ],
    )


async def apply_teams(uow: UnitOfWork, batch: list[tuple[int, TeamRow]]) -> BatchOutcome:
    errors = _dedupe(batch, lambda m: m.code)
    skip = {e.row for e in errors}
    units = await UnitRepository(uow.session).get_many(m.unit_code for _, m in batch)
    teams = TeamRepository(uow.session)
    existing = await teams.by_codes(m.code for _, m in batch)
    now = today()
    accepted: list[dict[str, Any]] = []
    for row_no, model in batch:
        if row_no in skip:
            continue
        try:
            check_team_unit(units.get(model.unit_code), code=model.unit_code, today=now)
            current = existing.get(model.code)
            data = model.model_dump()
            if current is not None and current.status == "dissolved":
                if any(getattr(current, k) != v for k, v in data.items()):
                    raise DomainError(_("Team {code} is dissolved.", code=model.code), field="code")
                continue  # same data as the dissolved team: nothing to do
        except DomainError as exc:
            errors.append(RowError(row_no, exc.field, str(exc)))
            continue
        accepted.append({**data, "id": current.id if current else uuid7()})
    changed = await teams.upsert(accepted)
    await publish_teams(uow, (team for team, _ in changed))
    created = sum(1 for _, was_created in changed if was_created)
    return BatchOutcome(created=created, updated=len(changed) - created, errors=errors)


# --- members --------------------------------------------------------------------------------


async def apply_members(uow: UnitOfWork, batch: list[tuple[int, MemberRow]]) -> BatchOutcome:
    errors = _dedupe(batch, lambda m: m.code)
    skip = {e.row for e in errors}
    teams = await TeamRepository(uow.session).by_codes(m.team_code for _, m in batch)
    members = MemberRepository(uow.session)
    ids = await members.ids_by_code([m.code for _, m in batch])
    accepted: list[dict[str, Any]] = []
    trainings: list[dict[str, Any]] = []
    for row_no, model in batch:
        if row_no in skip:
            continue
        try:
            team = teams.get(model.team_code)
            if team is None:
                raise DomainError(
                    _("Unknown team {code!r}.", code=model.team_code), field="team_code"
                )
            team.check_accepts_members()
            check_membership_dates(joined_on=model.joined_on, left_on=model.left_on)
            trained = _training_given(model)
        except DomainError as exc:
            errors.append(RowError(row_no, exc.field or "team_code", str(exc)))
            continue
        member_id = ids.get(model.code) or uuid7()
        accepted.append(
            {
                **model.model_dump(exclude={"team_code", "training_course"}),
                "id": member_id,
                "team_id": team.id,
                "trained": trained,
            }
        )
        if trained:
            trainings.append(
                {
                    "id": uuid7(),
                    "member_id": member_id,
                    "course": model.training_course,
                    "completed_on": model.training_completed_on,
                }
            )
    changed = await members.upsert(accepted)
    await members.add_trainings(trainings)
    await uow.publish_now(
        [
            OutboundEvent.of(member.changed_event(), source=SOURCE, subject=str(member.id))
            for member, _ in changed
        ],
    )
    created = sum(1 for _, was_created in changed if was_created)
    return BatchOutcome(created=created, updated=len(changed) - created, errors=errors)


def _training_given(model: MemberRow) -> bool:
    if (model.training_course is None) != (model.training_completed_on is None):
        raise DomainError(
            _("training_course and training_completed_on go together."), field="training_course"
        )
    return model.training_course is not None


# --- re-organisation ------------------------------------------------------------------------


@dataclass
class Reorganisation:
    """What a merge / split / re-parent touched, for the response and the events."""

    changes: dict[str, UnitChange] = field(default_factory=dict)
    teams: dict[Any, Team] = field(default_factory=dict)
    crosswalk: list[dict[str, Any]] = field(default_factory=list)

    def mark(self, codes: Iterable[str], change: UnitChange) -> None:
        for code in codes:
            # The strongest change wins: a re-parented child is also "updated" by its move.
            if self.changes.get(code) in (None, "updated"):
                self.changes[code] = change

    def add_teams(self, teams: Iterable[Team]) -> None:
        for team in teams:
            held = self.teams.get(team.id)
            if held is None or held.version < team.version:
                self.teams[team.id] = team

    def summary(self) -> dict[str, Any]:
        return {
            "units": {code: change for code, change in sorted(self.changes.items())},
            "teams_moved": len(self.teams),
            "crosswalk": [{k: v for k, v in row.items() if k != "id"} for row in self.crosswalk],
        }


async def _require(repo: UnitRepository, code: str, *, field: str) -> AdminUnit:
    unit = await repo.get(code, lock=True)
    if unit is None:
        raise DomainError(_("Unknown unit {code!r}.", code=code), field=field)
    if not unit.is_current(today=today()):
        raise DomainError(
            _("Unit {code!r} is no longer current.", code=code), field=field, conflict=True
        )
    return unit


async def _move_under(
    uow: UnitOfWork, plan: Reorganisation, *, unit: AdminUnit, parent: AdminUnit, on: date
) -> None:
    repo = UnitRepository(uow.session)
    check_parent(level=unit.level, parent_level=parent.level)
    check_no_cycle(unit_code=unit.code, new_parent_path=parent.path)
    moved = await repo.move_subtree(old_path=unit.path, new_path=child_path(parent.path, unit.code))
    await repo.set_parent(unit.code, parent.code)
    plan.mark(moved, "updated")
    plan.mark([unit.code], "reparented")
    plan.crosswalk.append(
        {
            "old_code": unit.code,
            "new_code": unit.code,
            "change": "reparented",
            "effective_on": on,
            "old_parent_code": unit.parent_code,
            "new_parent_code": parent.code,
        }
    )
    plan.add_teams(await TeamRepository(uow.session).reversion_in_units(moved))


async def _children(repo: UnitRepository, unit: AdminUnit) -> list[AdminUnit]:
    return [u for u in await repo.subtree(unit.path) if u.parent_code == unit.code]


async def merge_units(
    uow: UnitOfWork, *, sources: Sequence[str], into: str, effective_on: date
) -> Reorganisation:
    """DHIS2 merge: sources retire into the target; their children and teams move to it."""
    repo = UnitRepository(uow.session)
    if into in sources:
        raise DomainError(_("A unit cannot be merged into itself."), field="into")
    target = await _require(repo, into, field="into")
    plan = Reorganisation()
    for code in dict.fromkeys(sources):
        source = await _require(repo, code, field="sources")
        if source.level != target.level:
            raise DomainError(
                _(
                    "{code} is a {level}, {into} a {into_level}: merge like with like.",
                    code=code,
                    level=level_name(source.level),
                    into=into,
                    into_level=level_name(target.level),
                ),
                field="sources",
            )
        for child in await _children(repo, source):
            await _move_under(uow, plan, unit=child, parent=target, on=effective_on)
        await repo.retire(code, valid_to=retirement_date(effective_on), replaced_by=[into])
        plan.mark([code], "merged")
        plan.crosswalk.append(
            {
                "old_code": code,
                "new_code": into,
                "change": "merged",
                "effective_on": effective_on,
                "old_parent_code": source.parent_code,
                "new_parent_code": target.parent_code,
            }
        )
    plan.add_teams(await TeamRepository(uow.session).move_units(dict.fromkeys(sources, into)))
    await _finish(uow, plan)
    return plan


async def split_unit(
    uow: UnitOfWork,
    *,
    code: str,
    into: Sequence[str],
    effective_on: date,
    assign: dict[str, str],
) -> Reorganisation:
    """DHIS2 split: the source retires; each child unit and team goes to the target `assign`
    names for its code (the first target by default)."""
    repo = UnitRepository(uow.session)
    if code in into:
        raise DomainError(_("A unit cannot be split into itself."), field="into")
    source = await _require(repo, code, field="code")
    targets = {c: await _require(repo, c, field="into") for c in dict.fromkeys(into)}
    for target in targets.values():
        if target.level != source.level:
            raise DomainError(
                _("{code} is not a {level}.", code=target.code, level=level_name(source.level)),
                field="into",
            )
    strays = sorted(k for k, v in assign.items() if v not in targets)
    if strays:
        raise DomainError(
            _("assign sends {codes} outside `into`.", codes=", ".join(strays)), field="assign"
        )
    default = next(iter(targets))
    plan = Reorganisation()
    children = await _children(repo, source)
    team_codes = await TeamRepository(uow.session).codes_in_unit(code)
    unknown = sorted(set(assign) - {c.code for c in children} - set(team_codes))
    if unknown:
        raise DomainError(
            _(
                "assign names {codes}: not a child unit or team of {code}.",
                codes=", ".join(unknown[:5]),
                code=code,
            ),
            field="assign",
        )
    for child in children:
        target = targets[assign.get(child.code, default)]
        await _move_under(uow, plan, unit=child, parent=target, on=effective_on)
    moves = {t: assign.get(t, default) for t in team_codes}
    plan.add_teams(await TeamRepository(uow.session).move_codes(moves))
    await repo.retire(code, valid_to=retirement_date(effective_on), replaced_by=list(targets))
    plan.mark([code], "split")
    for target in targets.values():
        plan.crosswalk.append(
            {
                "old_code": code,
                "new_code": target.code,
                "change": "split",
                "effective_on": effective_on,
                "old_parent_code": source.parent_code,
                "new_parent_code": target.parent_code,
            }
        )
    await _finish(uow, plan)
    return plan


async def reparent_unit(
    uow: UnitOfWork, *, code: str, parent_code: str, effective_on: date
) -> Reorganisation:
    repo = UnitRepository(uow.session)
    unit = await _require(repo, code, field="code")
    parent = await _require(repo, parent_code, field="parent_code")
    plan = Reorganisation()
    if unit.parent_code != parent_code:
        await _move_under(uow, plan, unit=unit, parent=parent, on=effective_on)
    await _finish(uow, plan)
    return plan


async def _finish(uow: UnitOfWork, plan: Reorganisation) -> None:
    repo = UnitRepository(uow.session)
    await repo.record_crosswalk(plan.crosswalk)
    units = await repo.get_many(plan.changes)
    await publish_units(
        uow,
        [units[c] for c in plan.changes if c in units],
        change=lambda u: plan.changes[u.code],
    )
    await publish_teams(uow, plan.teams.values())


# --- the local identity provider: accounts, invitations, tokens, keys -----------------------

_hasher = PasswordHasher()  # argon2id with the library's (RFC 9106 low-memory) parameters
_DUMMY_HASH: list[str] = []  # verified against when there is no account: same time either way


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def password_matches(password_hash: str | None, password: str) -> bool:
    """argon2 runs in a thread: ~50 ms of CPU that must not stall the event loop."""
    if password_hash is None:
        if not _DUMMY_HASH:
            _DUMMY_HASH.append(await hash_password(secrets.token_urlsafe(16)))
        password_hash = _DUMMY_HASH[0]
        password = ""  # never matches
    try:
        return await asyncio.to_thread(_hasher.verify, password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True)
class IssuerConfig:
    issuer: str
    audience: str
    token_ttl_seconds: int
    leeway_seconds: float
    invitation_ttl: timedelta
    key_passphrase: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Invitation:
    account: Account
    code: str  # shown once
    expires_at: datetime


async def create_account(
    uow: UnitOfWork,
    *,
    username: str,
    display_name: str,
    roles: Sequence[RoleGrant],
    invitation_ttl: timedelta,
) -> Invitation:
    grants = check_roles(roles)
    account = Account(
        id=uuid7(),
        username=username,
        display_name=display_name,
        roles=grants,
        disabled=False,
        has_password=False,
    )
    if not await adapters.insert_account(
        uow.session, account_id=account.id, username=username, display_name=display_name,
        roles=grants,
    ):  # fmt: skip
        raise DomainError(
            _("The username {username!r} is taken.", username=username),
            field="username",
            conflict=True,
        )
    code = new_invitation_code()
    expires_at = datetime.now(UTC) + invitation_ttl
    await adapters.insert_invitation(
        uow.session,
        code_sha256=invitation_digest(code),
        account_id=account.id,
        expires_at=expires_at,
    )
    await uow.commit()
    return Invitation(account=account, code=code, expires_at=expires_at)


async def redeem_invitation(uow: UnitOfWork, *, code: str, password: str) -> Account | None:
    """Sets the password; None when the code is unknown, expired or already used. A password
    the rules refuse (DomainError) leaves the invitation unused."""
    account_id = await adapters.redeem_invitation(uow.session, invitation_digest(code))
    if account_id is None:
        return None
    row = await adapters.account_by_id(uow.session, account_id)
    if row is None or row.account.disabled:
        return None
    check_password(password, username=row.account.username)
    await adapters.set_password_hash(uow.session, account_id, await hash_password(password))
    await uow.commit()
    return row.account


async def authenticate(uow: UnitOfWork, *, username: str, password: str) -> Account | None:
    """The account whose password this is, if it is enabled; None otherwise (same work done
    for unknown names, so timing tells nothing)."""
    row = await adapters.account_by_username(uow.session, username)
    known = row is not None and not row.account.disabled
    matches = await password_matches(row.password_hash if row and known else None, password)
    if row is None or not known or not matches:
        return None
    assert row.password_hash is not None  # a match implies a hash
    if _hasher.check_needs_rehash(row.password_hash):
        await adapters.set_password_hash(uow.session, row.account.id, await hash_password(password))
        await uow.commit()
    return row.account


def new_signing_key(*, passphrase: bytes | None) -> adapters.SigningKey:
    private = ec.generate_private_key(ec.SECP256R1())
    kid = str(uuid7())
    jwk: dict[str, Any] = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    jwk.update(kid=kid, alg=SIGNING_ALGORITHM, use="sig")
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    ).decode()
    return adapters.SigningKey(
        kid=kid,
        algorithm=SIGNING_ALGORITHM,
        private_key_pem=pem,
        public_jwk=json.dumps(jwk),
        retired_at=None,
    )


SIGNING_ALGORITHM = "ES256"


@functools.lru_cache(maxsize=8)
def private_key(pem: str, passphrase: bytes | None) -> PrivateKeyTypes:
    """A stored key, decrypted once per process (the key derivation is slow by design)."""
    try:
        encrypted = pem.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        return serialization.load_pem_private_key(
            pem.encode(), password=passphrase if encrypted else None
        )
    except (TypeError, ValueError) as exc:
        raise RuntimeError(
            "The active signing key cannot be decrypted: TEAMS_SIGNING_KEY_PASSPHRASE is "
            "missing or is not the one it was stored with."
        ) from exc


async def signing_key(uow: UnitOfWork, *, config: IssuerConfig) -> adapters.SigningKey:
    """The active key, created on first use (a concurrent creator's key wins)."""
    key = await adapters.active_signing_key(uow.session)
    if key is not None:
        return key
    candidate = new_signing_key(passphrase=config.key_passphrase)
    if await adapters.insert_signing_key(uow.session, candidate):
        await uow.commit()
        return candidate
    key = await adapters.active_signing_key(uow.session)
    assert key is not None, "another process installed the active key"
    return key


async def rotate_signing_key(uow: UnitOfWork, *, config: IssuerConfig) -> str:
    """A new key signs from now on; the old one stays published until its tokens expire."""
    await adapters.retire_signing_keys(uow.session)
    key = new_signing_key(passphrase=config.key_passphrase)
    await adapters.insert_signing_key(uow.session, key)
    await uow.commit()
    return key.kid


async def issue_token(uow: UnitOfWork, account: Account, *, config: IssuerConfig) -> str:
    key = await signing_key(uow, config=config)
    claims = access_claims(
        account,
        issuer=config.issuer,
        audience=config.audience,
        now=datetime.now(UTC),
        ttl_seconds=config.token_ttl_seconds,
    )
    return jwt.encode(
        claims,
        private_key(key.private_key_pem, config.key_passphrase),  # type: ignore[arg-type]
        algorithm=key.algorithm,
        headers={"kid": key.kid},
    )


async def published_keys(session: AsyncSession, *, config: IssuerConfig) -> dict[str, Any]:
    now = datetime.now(UTC)
    since = now - timedelta(seconds=config.token_ttl_seconds + config.leeway_seconds)
    keys = await adapters.published_signing_keys(session, since=since)
    return {
        "keys": [
            json.loads(k.public_jwk)
            for k in keys
            if key_published(
                retired_at=k.retired_at,
                now=now,
                token_ttl_seconds=config.token_ttl_seconds,
                leeway_seconds=config.leeway_seconds,
            )
        ]
    }


async def recently_disabled(session: AsyncSession, *, config: IssuerConfig) -> list[str]:
    """Accounts disabled while some of their tokens may still be unexpired (and a margin)."""
    since = datetime.now(UTC) - timedelta(seconds=2 * config.token_ttl_seconds + 3600)
    return [str(s) for s in await adapters.disabled_subjects(session, since=since)]
