"""scoring: each round approval's members with activity, for member commendation candidates

Revision ID: 0019
"""

from alembic import op

from scoring.adapters import tables

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The first revision of this table: created from its definition in adapters.tables.
    tables.round_member_snapshots.create(op.get_bind())


def downgrade() -> None:
    op.drop_table("round_member_snapshots", schema="scoring")
