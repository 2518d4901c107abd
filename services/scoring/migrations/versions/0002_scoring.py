"""scoring: activity facts, indicators, distinct sets, roster, scores, criteria sets, targets,
campaigns; seeds the default criteria set (default@1) as the active one.

Revision ID: 0002
"""

import json

import sqlalchemy as sa
from alembic import op

from scoring import adapters
from scoring.domain import DEFAULT_CRITERIA_SET, criteria_to_json

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None
SCHEMA = "scoring"

# One row per indicator: replaced by `indicator_sets` in revision 0003 (defined here, frozen).
LEGACY_INDICATOR_VALUES = sa.Table(
    "indicator_values",
    sa.MetaData(schema=SCHEMA),
    sa.Column("subject_type", sa.String(16), primary_key=True),
    sa.Column("subject_id", sa.String(64), primary_key=True),
    sa.Column("period", sa.String(80), primary_key=True),
    sa.Column("indicator", sa.String(80), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
    sa.Index("ix_indicator_values_zero", "subject_type", postgresql_where=sa.text("value = 0")),
)

# The first revision of these tables: created from their definitions in adapters.py, so the two
# cannot drift today. A later change to a table gets its own explicit op.* revision.
TABLES = (
    adapters.activity_facts,
    LEGACY_INDICATOR_VALUES,
    adapters.distinct_values,
    adapters.state_values,
    adapters.team_state,
    adapters.member_state,
    adapters.subjects,
    adapters.admin_units,
    adapters.dirty_subjects,
    adapters.scores,
    adapters.criteria_sets,
    adapters.targets,
    adapters.campaigns,
)


def upgrade() -> None:
    bind = op.get_bind()
    for table in TABLES:
        table.create(bind)
    op.execute(
        sa.text(
            "INSERT INTO scoring.criteria_sets (version, name, definition, active, activated_at) "
            "VALUES (:v, 'default', CAST(:d AS jsonb), true, now())"
        ).bindparams(
            v=DEFAULT_CRITERIA_SET.version,
            d=json.dumps(criteria_to_json(DEFAULT_CRITERIA_SET), ensure_ascii=False),
        )
    )


def downgrade() -> None:
    bind = op.get_bind()
    for table in reversed(TABLES):
        table.drop(bind)
