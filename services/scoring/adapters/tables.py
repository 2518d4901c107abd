"""Tables of the `scoring` schema, the key type of their key columns, and the lanes of the dirty
marks.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Identity,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSON, JSONB
from sqlalchemy.dialects.postgresql import UUID as PgUUID

from common.outbox_tables import define_service_tables

SCHEMA = "scoring"


def key_string(length: int) -> String:
    """A code or name that keys rows: compared byte by byte (collation "C"). Under the
    database's default collation every index comparison went through the C library's strcoll;
    nothing here is ever shown sorted to people, and Python sorts the same way (migration 0008).
    """
    return String(length, collation="C")


metadata = MetaData(schema=SCHEMA)
service_tables = define_service_tables(metadata)

# The consumer holds this lock shared per batch; a full recompute holds it exclusively.
RECOMPUTE_LOCK_KEY = 582_731_004

activity_facts = Table(
    "activity_facts",
    metadata,
    Column("activity_id", PgUUID(as_uuid=True), primary_key=True),
    Column("team_id", PgUUID(as_uuid=True), nullable=False),
    Column("province", key_string(64)),
    Column("district", key_string(64)),
    Column("commune", key_string(64)),
    Column("village", key_string(64)),
    Column("occurred_at", DateTime(timezone=True)),
    Column("periods", ARRAY(Text), nullable=False, server_default="{}"),
    Column("counters", JSONB, nullable=False, server_default="{}"),
    Column("distinct_values", JSONB, nullable=False, server_default="{}"),
    # recorded = the ActivityRecorded arrived; voided = an ActivityVoided arrived (any order)
    Column("recorded", Boolean, nullable=False),
    Column("voided", Boolean, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_facts_commune", "commune"),
    Index("ix_facts_district", "district"),
    Index("ix_facts_village", "village"),
    Index("ix_facts_province", "province"),
    Index("ix_facts_team", "team_id"),  # a team's facts follow it when it moves
)

# All counters of one subject-period in one JSONB object (revision 0003): an activity touches one
# row per subject-period instead of one per indicator. Merged by `scoring.jsonb_add`.
indicator_sets = Table(
    "indicator_sets",
    metadata,
    Column("subject_type", key_string(16), primary_key=True),
    Column("subject_id", key_string(64), primary_key=True),
    Column("period", key_string(80), primary_key=True),
    Column("indicators", JSONB, nullable=False),
    Index("ix_indicator_sets_empty", "subject_type", postgresql_where=text("indicators = '{}'")),
)

# Distinct households / members / teams / weeks per subject and period, reference-counted so a
# void removes a household only when no other live activity visited it.
distinct_values = Table(
    "distinct_values",
    metadata,
    Column("subject_type", key_string(16), primary_key=True),
    Column("subject_id", key_string(64), primary_key=True),
    Column("period", key_string(80), primary_key=True),
    Column("dim", key_string(16), primary_key=True),
    Column("value", key_string(128), primary_key=True),
    Column("refcount", Integer, nullable=False),
    Index("ix_distinct_values_dead", "subject_type", postgresql_where=text("refcount <= 0")),
)

# Period-independent indicators from the teams topics: teams, members, trained_members.
state_values = Table(
    "state_values",
    metadata,
    Column("subject_type", key_string(16), primary_key=True),
    Column("subject_id", key_string(64), primary_key=True),
    Column("indicator", key_string(80), primary_key=True),
    Column("value", BigInteger, nullable=False),
    Index("ix_state_values_zero", "subject_type", postgresql_where=text("value = 0")),
)

team_state = Table(
    "team_state",
    metadata,
    Column("team_id", PgUUID(as_uuid=True), primary_key=True),
    Column("province", key_string(64)),
    Column("district", key_string(64)),
    Column("commune", key_string(64)),
    Column("village", key_string(64)),
    Column("active", Boolean, nullable=False),
    Column("version", Integer, nullable=False),  # -1: known only through its members so far
    Column("members", Integer, nullable=False),
    Column("trained_members", Integer, nullable=False),
)

member_state = Table(
    "member_state",
    metadata,
    Column("member_id", PgUUID(as_uuid=True), primary_key=True),
    Column("team_id", PgUUID(as_uuid=True), nullable=False),
    Column("counted", Boolean, nullable=False),
    Column("trained", Boolean, nullable=False),
    Column("version", Integer, nullable=False),
)

subjects = Table(
    "subjects",
    metadata,
    Column("subject_type", key_string(16), primary_key=True),
    Column("subject_id", key_string(64), primary_key=True),
    Column("parent_type", key_string(16)),
    Column("parent_id", key_string(64)),
    Column("province", key_string(64)),
    Column("district", key_string(64)),
    Column("commune", key_string(64)),
    Column("village", key_string(64)),
    Index("ix_subjects_parent", "parent_type", "parent_id", "subject_type"),
)

admin_units = Table(
    "admin_units",
    metadata,
    Column("code", key_string(64), primary_key=True),
    Column("level", key_string(16), nullable=False),
    Column("path", JSONB, nullable=False),
    Column("change", String(16), nullable=False),
    Column("replaced_by", ARRAY(Text), nullable=False, server_default="{}"),
    Column("version", Integer, nullable=False),
)


class Lane(IntEnum):
    """Which queue a dirty mark waits in: a live activity's scores never queue behind the
    hundreds of thousands of re-scorings a bulk import or a recompute asks for."""

    LIVE = 0  # activities, voids, moves, targets: someone waits for these scores
    BACKGROUND = 1  # state indicators from the roster, re-scoring everything


# Append-only marks (no unique key): a consumer batch never waits on rows the publisher holds;
# the publisher coalesces duplicates when it takes them.
dirty_subjects = Table(
    "dirty_subjects",
    metadata,
    Column("seq", BigInteger, Identity(always=True), primary_key=True),
    Column("subject_type", key_string(16), nullable=False),
    Column("subject_id", key_string(64), nullable=False),
    Column("period", key_string(80), nullable=False),
    Column("event_time", DateTime(timezone=True)),
    # W3C traceparent of the span that marked it: the publisher's span continues that trace.
    Column("traceparent", Text),
    Column("lane", SmallInteger, nullable=False, server_default=str(int(Lane.LIVE))),
    Index("ix_dirty_subjects_key", "subject_type", "subject_id", "period"),
    Index("ix_dirty_subjects_lane", "lane", "seq"),
)

# A subject whose state indicators (teams, members, trained members) changed: one row per
# subject, not per period (a roster import touches a subject in batch after batch, and the
# repeated marks cost a conflict check each). Taken in the background lane; the periods it
# publishes are those of its first and last mark (`month` changes only at a month's end).
state_marks = Table(
    "state_marks",
    metadata,
    Column("subject_type", key_string(16), primary_key=True),
    Column("subject_id", key_string(64), primary_key=True),
    Column("seq", BigInteger, Identity(always=True), nullable=False),
    Column("first_marked_at", DateTime(timezone=True), nullable=False),
    Column("last_marked_at", DateTime(timezone=True), nullable=False),
    Column("month", key_string(16), nullable=False),
    Column("traceparent", Text),
    Index("ix_state_marks_seq", "seq"),
)

scores = Table(
    "scores",
    metadata,
    Column("subject_type", key_string(16), primary_key=True),
    Column("subject_id", key_string(64), primary_key=True),
    Column("period", key_string(80), primary_key=True),
    Column("criteria_set", key_string(80), primary_key=True),
    Column("score", Float, nullable=False),
    Column("max_score", Float, nullable=False),
    # `json`: stored and served as written (never queried inside), no binary parse per upsert
    Column("components", JSON, nullable=False),
    Column("indicators", JSON, nullable=False),
    Column("rank", Integer),
    Column("rank_of", Integer),
    Column("version", Integer, nullable=False),
    Column("as_of_event_time", DateTime(timezone=True)),
    Column("computed_at", DateTime(timezone=True), nullable=False),
    # Rankings scan a (period, criteria set, level) prefix. subject_id completes the key, so a
    # probe by the whole key costs one row through either index: with the three-column index,
    # stale statistics made the planner probe it and filter on subject_id, O(scores) a probe.
    Index("ix_scores_ranking", "period", "criteria_set", "subject_type", "subject_id"),
)

criteria_sets = Table(
    "criteria_sets",
    metadata,
    Column("version", String(80), primary_key=True),
    Column("name", String(60), nullable=False),
    Column("definition", JSONB, nullable=False),
    Column("active", Boolean, nullable=False, server_default="false"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("activated_at", DateTime(timezone=True)),
    Index("ux_criteria_sets_one_active", "active", unique=True, postgresql_where=text("active")),
)

targets = Table(
    "targets",
    metadata,
    Column("subject_type", key_string(16), primary_key=True),
    Column("subject_id", key_string(64), primary_key=True),
    Column("period", key_string(80), primary_key=True),
    Column("indicator", key_string(80), primary_key=True),
    Column("value", Float, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

campaigns = Table(
    "campaigns",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(300), nullable=False),
    Column("start_date", Date, nullable=False),
    Column("end_date", Date, nullable=False),
    Column("unit_codes", ARRAY(Text), nullable=False, server_default="{}"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Full recomputes run as background jobs: one at a time (the partial unique index), their
# progress written while they run so `GET /v1/recompute/{id}` can report it.
JOB_ACTIVE_STATES = ("queued", "running")
recompute_jobs = Table(
    "recompute_jobs",
    metadata,
    Column("id", PgUUID(as_uuid=True), primary_key=True),
    Column("state", key_string(16), nullable=False),  # queued, running, succeeded, failed
    Column("facts_total", BigInteger),
    Column("facts_done", BigInteger, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("started_at", DateTime(timezone=True)),
    # bumped every second while the job runs: a job not bumped for long died with its process
    Column("heartbeat_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("finished_at", DateTime(timezone=True)),
    Column("result", JSON),
    Column("error", Text),
    Index(
        "ux_recompute_jobs_one_active",
        text("(true)"),
        unique=True,
        postgresql_where=text("state IN ('queued', 'running')"),
    ),
)

# Names and codes of teams and units (the teams topics carry them): reports show them.
subject_names = Table(
    "subject_names",
    metadata,
    Column("subject_type", key_string(16), primary_key=True),
    Column("subject_id", key_string(64), primary_key=True),
    Column("code", String(64), nullable=False),
    Column("name", String(300), nullable=False),
    Column("version", Integer, nullable=False),
)

# Evaluation rounds: one per unit, period and criteria set; every move recorded, and each
# approval freezes the scores under the unit (its snapshot) for reports that never change.
evaluation_rounds = Table(
    "evaluation_rounds",
    metadata,
    Column("id", PgUUID(as_uuid=True), primary_key=True),
    Column("level", key_string(16), nullable=False),
    Column("unit_code", key_string(64), nullable=False),
    Column("period", key_string(80), nullable=False),
    Column("criteria_set", key_string(80), nullable=False),
    Column("due_on", Date, nullable=False),
    Column("state", key_string(16), nullable=False),
    Column("approvals", Integer, nullable=False, server_default="0"),
    Column("version", Integer, nullable=False, server_default="1"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index(
        "ux_evaluation_rounds_unit_period",
        "level",
        "unit_code",
        "period",
        "criteria_set",
        unique=True,
    ),
    Index("ix_evaluation_rounds_period", "period", "level"),
)

round_transitions = Table(
    "round_transitions",
    metadata,
    Column("seq", BigInteger, Identity(always=True), primary_key=True),
    Column("round_id", PgUUID(as_uuid=True), nullable=False),
    Column("action", key_string(16), nullable=False),  # open, submit, approve, reopen
    Column("from_state", key_string(16)),
    Column("to_state", key_string(16), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("reason", Text),
    Column("trace_id", String(32)),  # the request's trace: what else it did
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_round_transitions_round", "round_id", "seq"),
)

# One row per approval: when, by whom, and the unit's summary as it was (reports reproduce it).
round_approvals = Table(
    "round_approvals",
    metadata,
    Column("round_id", PgUUID(as_uuid=True), primary_key=True),
    Column("approval", Integer, primary_key=True),
    Column("approved_at", DateTime(timezone=True), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("subjects", Integer, nullable=False),
    Column("summary", JSON, nullable=False),
)

round_snapshots = Table(
    "round_snapshots",
    metadata,
    Column("round_id", PgUUID(as_uuid=True), primary_key=True),
    Column("approval", Integer, primary_key=True),
    Column("subject_type", key_string(16), primary_key=True),
    Column("subject_id", key_string(64), primary_key=True),
    Column("code", String(64), nullable=False),
    Column("name", String(300)),
    Column("parent_type", key_string(16)),
    Column("parent_id", key_string(64)),
    Column("parent_code", String(64)),
    Column("parent_name", String(300)),
    Column("score", Float),
    Column("max_score", Float),
    Column("rank", Integer),
    Column("rank_of", Integer),
    Column("components", JSON),
    Column("indicators", JSON),
    Column("score_version", Integer),  # the live score's version then: later changes are counted
)

# Each approval's members with activity under the round's unit in its period, for member
# commendation candidates: counted from the facts when the round is approved, frozen then.
round_member_snapshots = Table(
    "round_member_snapshots",
    metadata,
    Column("round_id", PgUUID(as_uuid=True), primary_key=True),
    Column("approval", Integer, primary_key=True),
    Column("member_id", PgUUID(as_uuid=True), primary_key=True),
    Column("team_id", PgUUID(as_uuid=True), nullable=False),
    Column("activities", Integer, nullable=False),
    Column("households", Integer, nullable=False),
    Column("citizens_reached", BigInteger, nullable=False),
)

# Teams named by an unresolved suspicious-activity alert (notifications.alert-raised.v1): one row
# per alert, deleted when it resolves. They are left out of commendation candidates.
team_flags = Table(
    "team_flags",
    metadata,
    Column("alert_id", PgUUID(as_uuid=True), primary_key=True),
    Column("team_id", key_string(64), nullable=False),
    Column("check_name", String(64)),
    Column("raised_at", DateTime(timezone=True), nullable=False),
    Index("ix_team_flags_team", "team_id"),
)

LEVEL_COLUMNS = ("province", "district", "commune", "village")


def columns_of(keys: Sequence[tuple[str, ...]], *names: str) -> dict[str, list[Any]]:
    """Column arrays for an `unnest(...)` statement, one per key position."""
    return {name: [key[index] for key in keys] for index, name in enumerate(names)}
