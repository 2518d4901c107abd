"""activities: replica unit path and members, partners, idempotency keys, monthly partitions

Revision ID: 0002
"""

from datetime import date

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None
SCHEMA = "activities"
# Monthly partitions created up front; events outside the window land in the default partition
# (an operator adds partitions ahead of time with `activities.ensure_month_partition`).
FIRST_MONTH = date(2022, 1, 1)
MONTHS = 12 * 8


def _month(offset: int) -> date:
    months = FIRST_MONTH.year * 12 + FIRST_MONTH.month - 1 + offset
    return date(months // 12, months % 12 + 1, 1)


def upgrade() -> None:
    for column in ("province", "district", "commune", "village"):
        op.add_column("team_replica", sa.Column(column, sa.String(64)), schema=SCHEMA)
    op.add_column("team_replica", sa.Column("dissolved_on", sa.Date), schema=SCHEMA)
    op.create_table(
        "member_replica",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("team_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("joined_on", sa.Date, nullable=False),
        sa.Column("left_on", sa.Date),
        sa.Column("removed", sa.Boolean, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema=SCHEMA,
    )
    op.create_index("ix_member_replica_team", "member_replica", ["team_id"], schema=SCHEMA)
    op.create_table(
        "partners",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("provinces", postgresql.ARRAY(sa.String(16)), nullable=False),
        sa.Column("rate_limit_per_second", sa.Integer, nullable=False),
        sa.Column("key_lookup", sa.String(12), nullable=False, unique=True),
        sa.Column("key_hash", sa.LargeBinary, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("key_rotated_at", sa.DateTime(timezone=True)),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        schema=SCHEMA,
    )
    op.create_table(
        "activity_ids",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("payload_hash", sa.LargeBinary, nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("partner_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("team_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("voided_at", sa.DateTime(timezone=True)),
        sa.Column("void_reason", sa.String(500)),
        schema=SCHEMA,
    )
    op.create_table(
        "activities",
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("team_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("member_id", postgresql.UUID(as_uuid=True)),
        sa.Column("partner_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("skills", postgresql.ARRAY(sa.Text), nullable=False),
        sa.Column("citizens_reached", sa.Integer, nullable=False),
        sa.Column("household_hash", sa.String(64)),
        sa.Column("audience", postgresql.ARRAY(sa.Text), nullable=False),
        sa.Column("campaign_id", sa.String(64)),
        sa.Column("outcomes", postgresql.JSONB, nullable=False),
        sa.Column("province", sa.String(64), nullable=False),
        sa.Column("district", sa.String(64)),
        sa.Column("commune", sa.String(64)),
        sa.Column("village", sa.String(64)),
        sa.Column("voided_at", sa.DateTime(timezone=True)),
        sa.Column("void_reason", sa.String(500)),
        sa.PrimaryKeyConstraint("occurred_at", "id"),
        schema=SCHEMA,
        postgresql_partition_by="RANGE (occurred_at)",
    )
    op.create_index("ix_activities_team", "activities", ["team_id", "occurred_at"], schema=SCHEMA)
    op.create_index(
        "ix_activities_province", "activities", ["province", "occurred_at"], schema=SCHEMA
    )
    op.execute(
        f'CREATE TABLE "{SCHEMA}".activities_default PARTITION OF "{SCHEMA}".activities DEFAULT'
    )
    op.execute(
        f"""CREATE FUNCTION "{SCHEMA}".ensure_month_partition(month date) RETURNS void
        LANGUAGE plpgsql AS $$
        DECLARE first date := date_trunc('month', month)::date;
        BEGIN
          EXECUTE format(
            'CREATE TABLE IF NOT EXISTS "{SCHEMA}".%I PARTITION OF "{SCHEMA}".activities
             FOR VALUES FROM (%L) TO (%L)',
            'activities_' || to_char(first, 'YYYY_MM'), first, (first + interval '1 month')::date);
        END $$"""
    )
    for offset in range(MONTHS):
        op.execute(f"SELECT \"{SCHEMA}\".ensure_month_partition('{_month(offset).isoformat()}')")


def downgrade() -> None:
    op.execute(f'DROP TABLE IF EXISTS "{SCHEMA}".activities CASCADE')
    op.execute(f'DROP FUNCTION IF EXISTS "{SCHEMA}".ensure_month_partition(date)')
    op.drop_table("activity_ids", schema=SCHEMA)
    op.drop_table("partners", schema=SCHEMA)
    op.drop_table("member_replica", schema=SCHEMA)
    for column in ("province", "district", "commune", "village", "dissolved_on"):
        op.drop_column("team_replica", column, schema=SCHEMA)
