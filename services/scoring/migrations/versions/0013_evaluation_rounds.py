"""scoring: evaluation rounds (transitions, approvals, frozen snapshots) and subject names

Revision ID: 0013
"""

from alembic import op

from scoring.adapters import tables

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

NEW_TABLES = (
    tables.subject_names,
    tables.evaluation_rounds,
    tables.round_transitions,
    tables.round_approvals,
    tables.round_snapshots,
)


def upgrade() -> None:
    # The first revision of these tables: created from their definitions in adapters.tables.
    for table in NEW_TABLES:
        table.create(op.get_bind())


def downgrade() -> None:
    for table in reversed(NEW_TABLES):
        op.drop_table(table.name, schema=table.schema)
