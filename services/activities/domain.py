"""Activities domain: the event a partner posts, its validation rules, keys and limits. No I/O."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Annotated, Any, Literal
from uuid import UUID

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.contracts.activities import ActivityKind, OutcomeName, Skill
from common.i18n import Message, _

# The per-key limiter moved to common (teams limits partner reads too); re-exported here.
from common.moments import IsoAwareDatetime
from common.ratelimit import RateLimiter, TokenBucket  # noqa: F401
from common.text import NameText

# Teams' dates (joined_on, left_on, established_on) are local dates in Vietnam (UTC+7, no DST):
# an event's occurred_at is compared on that calendar.
VIETNAM = timezone(timedelta(hours=7))
MAX_BATCH_ITEMS = 1_000
MAX_COUNT = 10_000  # no single activity reaches or installs more than this
# A household visit reaches the people of one household: more is a data-entry error.
MAX_CITIZENS_PER_HOUSEHOLD_VISIT = 50

Count = Annotated[int, Field(ge=0, le=MAX_COUNT, strict=True)]
Tag = Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[a-z][a-z0-9_]*$")]

# Rejection reasons (stable API: partners branch on them).
Reason = Literal[
    "invalid",
    "unknown_field",
    "naive_timestamp",
    "unknown_skill",
    "unknown_outcome",
    "count_out_of_range",
    "conflict",
    "team_unknown",
    "team_unit_unknown",
    "team_outside_scope",
    "team_dissolved",
    "occurred_in_future",
    "before_team_established",
    "member_unknown",
    "member_not_in_team",
    "member_not_in_team_at_occurred_at",
]
# The replica learns teams and members from Kafka a little after teams commits them: these
# reasons mean "not yet", and the same event posted again later may be accepted.
RETRYABLE_REASONS: frozenset[str] = frozenset(
    {"team_unknown", "team_unit_unknown", "member_unknown"}
)


# What `_check_event` refuses of a household visit, as the request schema states it.
_HOUSEHOLD_VISIT_REACH: dict[str, Any] = {
    "if": {"properties": {"kind": {"const": "household_visit"}}, "required": ["kind"]},
    "then": {"properties": {"citizens_reached": {"maximum": MAX_CITIZENS_PER_HOUSEHOLD_VISIT}}},
}


class ActivityIn(BaseModel):
    """One activity as a partner posts it (DESIGN section 3)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, json_schema_extra={"allOf": [_HOUSEHOLD_VISIT_REACH]}
    )

    id: UUID
    team_id: UUID
    member_id: UUID | None = None
    occurred_at: IsoAwareDatetime
    kind: ActivityKind
    skills: Annotated[list[Skill], Field(max_length=5)] = []
    citizens_reached: Count = 0
    household_ref: Annotated[NameText | None, Field(min_length=1, max_length=200)] = None
    audience: Annotated[list[Tag], Field(max_length=10)] = []
    campaign_id: Annotated[NameText | None, Field(min_length=1, max_length=64)] = None
    outcomes: Annotated[dict[OutcomeName, Count], Field(max_length=7)] = {}


@dataclass(frozen=True)
class TeamView:
    """What the replica knows of a team."""

    id: UUID
    status: str
    province: str | None
    district: str | None
    commune: str | None
    village: str | None
    established_on: date | None
    dissolved_on: date | None
    # W3C traceparent of the teams event this state came from: ingest links its span to it.
    origin_trace: str | None = None


@dataclass(frozen=True)
class MemberView:
    id: UUID
    team_id: UUID
    joined_on: date
    left_on: date | None
    removed: bool


@dataclass(frozen=True)
class Rejection:
    reason: str
    detail: Message  # rendered in the reader's language (the problem's, or the batch's)
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def retryable(self) -> bool:
        return self.reason in RETRYABLE_REASONS


def local_date(moment: datetime) -> date:
    return moment.astimezone(VIETNAM).date()


def check_against_replica(
    event: ActivityIn,
    *,
    team: TeamView | None,
    member: MemberView | None,
    provinces: Sequence[str] | None,
    now: datetime,
    clock_skew: timedelta,
) -> Rejection | None:
    """The business rules an event must pass; `provinces=None` means every province."""
    if team is None:
        return Rejection("team_unknown", _("The team is not known (yet); retry later."))
    day = local_date(event.occurred_at)
    rejection = _check_team(team, provinces=provinces, day=day) or _check_event(
        event, now=now, clock_skew=clock_skew
    )
    if rejection is not None or event.member_id is None:
        return rejection
    return _check_member(member, team_id=team.id, day=day)


def _check_team(team: TeamView, *, provinces: Sequence[str] | None, day: date) -> Rejection | None:
    if team.province is None:
        return Rejection("team_unit_unknown", _("The team's unit is not known yet; retry later."))
    if provinces is not None and team.province not in provinces:
        return Rejection("team_outside_scope", _("The team is outside this key's provinces."))
    if team.established_on is not None and day < team.established_on:
        return Rejection("before_team_established", _("occurred_at is before the team existed."))
    if team.status == "dissolved" and (team.dissolved_on is None or day >= team.dissolved_on):
        return Rejection("team_dissolved", _("The team was dissolved."))
    return None


def _check_event(event: ActivityIn, *, now: datetime, clock_skew: timedelta) -> Rejection | None:
    if event.occurred_at > now + clock_skew:
        return Rejection("occurred_in_future", _("occurred_at is in the future."))
    limit = MAX_CITIZENS_PER_HOUSEHOLD_VISIT
    if event.kind == "household_visit" and event.citizens_reached > limit:
        return Rejection(
            "count_out_of_range",
            _("A household visit reaches at most {limit} citizens.", limit=limit),
        )
    return None


def _check_member(member: MemberView | None, *, team_id: UUID, day: date) -> Rejection | None:
    if member is None or member.removed:
        return Rejection("member_unknown", _("The member is not known (yet); retry later."))
    if member.team_id != team_id:
        return Rejection("member_not_in_team", _("The member belongs to another team."))
    if member.joined_on > day or (member.left_on is not None and member.left_on <= day):
        return Rejection(
            "member_not_in_team_at_occurred_at",
            _("The member was not in the team at occurred_at."),
        )
    return None


def rejection_from_validation(exc: ValidationError) -> Rejection:
    """A schema error as a rejection naming the fields (never echoing the input)."""
    errors = [
        {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"], "type": e["type"]}
        for e in exc.errors(include_input=False, include_url=False)
    ]
    reason = _reason_of(exc.errors(include_input=False, include_url=False)[0])
    fields = ", ".join(sorted({e["field"] for e in errors}))
    return Rejection(reason, _("Invalid fields: {fields}", fields=fields), errors)


def _reason_of(error: Any) -> str:
    loc = tuple(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown_field"
    if kind == "timezone_aware":
        return "naive_timestamp"
    if loc and loc[0] == "skills" and kind == "literal_error":
        return "unknown_skill"
    if loc and loc[0] == "outcomes" and "[key]" in loc:
        return "unknown_outcome"
    if kind in {"greater_than_equal", "less_than_equal"}:
        return "count_out_of_range"
    return "invalid"


def household_hash(household_ref: str | None, *, key: bytes) -> str | None:
    """Keyed hash: repeat visits to one household match, the household itself stays unknown."""
    if household_ref is None:
        return None
    keyed = _keyed_sha256(key).copy()  # the key's HMAC pads are hashed once, not per event
    keyed.update(household_ref.encode())
    return keyed.hexdigest()


@functools.lru_cache(maxsize=4)
def _keyed_sha256(key: bytes) -> hmac.HMAC:
    return hmac.new(key, digestmod=hashlib.sha256)


def canonical_payload(event: ActivityIn, *, household: str | None) -> dict[str, Any]:
    """The event's meaning, independent of JSON spelling (offsets, key and list order)."""
    return {
        "id": str(event.id),
        "team_id": str(event.team_id),
        "member_id": str(event.member_id) if event.member_id else None,
        "occurred_at": event.occurred_at.astimezone(UTC).isoformat(),
        "kind": event.kind,
        "skills": sorted(set(event.skills)),
        "citizens_reached": event.citizens_reached,
        "household_hash": household,
        "audience": sorted(set(event.audience)),
        "campaign_id": event.campaign_id,
        "outcomes": {k: v for k, v in sorted(event.outcomes.items()) if v},
    }


@dataclass(frozen=True)
class Recording:
    """Who recorded a request's events and when, spelt once for all of them."""

    partner_id: str
    recorded_at: str

    @classmethod
    def of(cls, *, partner_id: UUID, recorded_at: datetime) -> Recording:
        return cls(str(partner_id), recorded_at.isoformat())


def recorded_payload(
    event: ActivityIn, *, canonical: dict[str, Any], team: TeamView, recording: Recording
) -> dict[str, Any]:
    """The `ActivityRecorded` payload, JSON-ready: the event's canonical fields (already built
    for its hash, so ids are spelt once per event), `occurred_at` with the partner's own offset,
    and the team's unit path."""
    return {
        **canonical,
        "occurred_at": event.occurred_at.isoformat(),
        "partner_id": recording.partner_id,
        "recorded_at": recording.recorded_at,
        "unit_path": {
            "province": team.province,
            "district": team.district,
            "commune": team.commune,
            "village": team.village,
        },
    }


def payload_hash(canonical: dict[str, Any]) -> bytes:
    """sha256 of the canonical payload as compact JSON with sorted keys. orjson spells it exactly
    as `json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)` did for these
    payloads (strings, integers, lists; a property test holds it to that), at a fraction of the
    cost: stored hashes keep matching, so retries stay duplicates across versions."""
    return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).digest()


# ---- partner keys ---------------------------------------------------------------------------

KEY_PREFIX = "cdtp"


@dataclass(frozen=True)
class IssuedKey:
    api_key: str  # shown once to the operator, never stored
    lookup: str  # public part, indexed
    digest: bytes  # sha256 of the whole key


def issue_key() -> IssuedKey:
    # 256 random bits: a fast hash is enough (no password stretching needed for such entropy).
    lookup = secrets.token_hex(6)
    api_key = f"{KEY_PREFIX}_{lookup}_{secrets.token_urlsafe(32)}"
    return IssuedKey(api_key=api_key, lookup=lookup, digest=key_digest(api_key))


def key_digest(api_key: str) -> bytes:
    return hashlib.sha256(api_key.encode()).digest()


def key_lookup(api_key: str) -> str | None:
    """The public lookup part of a well-formed key, else None."""
    parts = api_key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX:
        return None
    lookup, secret = parts[1], parts[2]
    if len(lookup) != 12 or not all(c in "0123456789abcdef" for c in lookup):
        return None
    if not 20 <= len(secret) <= 100:
        return None
    return lookup


def key_matches(api_key: str, digest: bytes) -> bool:
    return hmac.compare_digest(key_digest(api_key), digest)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def partner_version(changed_at: datetime) -> int:
    """A partner event's version: microseconds since the epoch of the change (exact, no float).

    Changes of one partner are serialised by its row lock, so later changes get larger values.
    """
    return (changed_at - _EPOCH) // timedelta(microseconds=1)


# ---- cursors --------------------------------------------------------------------------------


def encode_cursor(occurred_at: datetime, activity_id: UUID) -> str:
    raw = f"{occurred_at.astimezone(UTC).isoformat()}|{activity_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID] | None:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, _, ident = raw.partition("|")
        parsed = datetime.fromisoformat(moment)
        if parsed.tzinfo is None:
            return None
        return parsed, UUID(ident)
    except (ValueError, UnicodeDecodeError):
        return None
