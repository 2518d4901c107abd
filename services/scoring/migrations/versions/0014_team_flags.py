"""scoring: teams flagged by unresolved suspicious-activity alerts (commendation candidates)

Revision ID: 0014
"""

from alembic import op

from scoring.adapters import tables

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The first revision of this table: created from its definition in adapters.tables.
    tables.team_flags.create(op.get_bind())


def downgrade() -> None:
    op.drop_table(tables.team_flags.name, schema=tables.team_flags.schema)
