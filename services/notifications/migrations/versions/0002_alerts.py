"""notifications: rules, teams replica, activity log, score state, alerts, subscriptions,
deliveries and their attempts

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None
SCHEMA = "notifications"

UUID = postgresql.UUID(as_uuid=True)
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "rules",
        sa.Column("scope", sa.String(64), primary_key=True),
        sa.Column("alert_type", sa.String(32), primary_key=True),
        sa.Column("enabled", sa.Boolean),
        sa.Column(
            "params", postgresql.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")
        ),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
        schema=SCHEMA,
    )
    op.create_table(
        "teams",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("code", sa.String(64)),
        sa.Column(
            "unit_path",
            postgresql.ARRAY(sa.String(64)),
            nullable=False,
            server_default=sa.text("'{}'"),
        ),
        sa.Column("status", sa.String(16), nullable=False, server_default="active"),
        sa.Column("established_on", sa.Date),
        sa.Column("version", sa.Integer, nullable=False, server_default="0"),
        sa.Column("first_seen_at", TS, nullable=False),
        sa.Column("last_activity_at", TS),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_notifications_teams_unit_path",
        "teams",
        ["unit_path"],
        schema=SCHEMA,
        postgresql_using="gin",
    )
    op.create_table(
        "activity_log",
        sa.Column("activity_id", UUID, primary_key=True),
        sa.Column("team_id", UUID, nullable=False),
        sa.Column("member_id", UUID),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("household_hash", sa.String(128)),
        sa.Column("occurred_at", TS, nullable=False),
        sa.Column("recorded_at", TS, nullable=False),
        sa.Column("backdated_hours", sa.Float, nullable=False),
        sa.Column("voided", sa.Boolean, nullable=False, server_default=sa.text("false")),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_activity_log_member", "activity_log", ["member_id", "occurred_at"], schema=SCHEMA
    )
    op.create_index(
        "ix_activity_log_household",
        "activity_log",
        ["household_hash", "occurred_at"],
        schema=SCHEMA,
    )
    op.create_index(
        "ix_activity_log_team_recorded", "activity_log", ["team_id", "recorded_at"], schema=SCHEMA
    )
    op.create_table(
        "score_state",
        sa.Column("subject_type", sa.String(16), primary_key=True),
        sa.Column("subject_id", sa.String(200), primary_key=True),
        sa.Column("period", sa.String(64), primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
        schema=SCHEMA,
    )
    op.create_table(
        "alerts",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("alert_type", sa.String(32), nullable=False),
        sa.Column("dedupe_key", sa.String(600), nullable=False),
        sa.Column("subject_type", sa.String(32), nullable=False),
        sa.Column("subject_id", sa.String(300), nullable=False),
        sa.Column("period", sa.String(64)),
        sa.Column(
            "unit_path",
            postgresql.ARRAY(sa.String(64)),
            nullable=False,
            server_default=sa.text("'{}'"),
        ),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("summary", sa.String(500), nullable=False),
        sa.Column(
            "details", postgresql.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")
        ),
        sa.Column("raised_at", TS, nullable=False),
        sa.Column("acknowledged_at", TS),
        sa.Column("resolved_at", TS),
        schema=SCHEMA,
    )
    # One unresolved alert per condition: the dedupe key is unique among open/acknowledged.
    op.create_index(
        "uq_alerts_active_dedupe",
        "alerts",
        ["dedupe_key"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text("status <> 'resolved'"),
    )
    op.create_index(
        "ix_alerts_unit_path", "alerts", ["unit_path"], schema=SCHEMA, postgresql_using="gin"
    )
    op.create_index("ix_alerts_status_id", "alerts", ["status", "id"], schema=SCHEMA)
    op.create_table(
        "subscriptions",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("scope", sa.String(64), nullable=False),
        sa.Column("alert_types", postgresql.ARRAY(sa.String(32)), nullable=False),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("deleted_at", TS),
        schema=SCHEMA,
    )
    op.create_table(
        "deliveries",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("alert_id", UUID, sa.ForeignKey(f"{SCHEMA}.alerts.id"), nullable=False),
        sa.Column(
            "subscription_id", UUID, sa.ForeignKey(f"{SCHEMA}.subscriptions.id"), nullable=False
        ),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("round_start", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("last_status_code", sa.Integer),
        sa.Column("last_error", sa.String(500)),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("delivered_at", TS),
        sa.UniqueConstraint("alert_id", "subscription_id", name="uq_deliveries_alert_subscription"),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_deliveries_due",
        "deliveries",
        ["next_attempt_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_table(
        "delivery_attempts",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("delivery_id", UUID, sa.ForeignKey(f"{SCHEMA}.deliveries.id"), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("error", sa.String(500)),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_delivery_attempts_delivery", "delivery_attempts", ["delivery_id", "id"], schema=SCHEMA
    )


def downgrade() -> None:
    for table in (
        "delivery_attempts",
        "deliveries",
        "subscriptions",
        "alerts",
        "score_state",
        "activity_log",
        "teams",
        "rules",
    ):
        op.drop_table(table, schema=SCHEMA)
