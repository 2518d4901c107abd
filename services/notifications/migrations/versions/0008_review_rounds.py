"""notifications: a replica of the evaluation rounds, for the `round_overdue` rule

Revision ID: 0008
"""

from alembic import op

from notifications.adapters import rounds_table

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The first revision of this table: created from its definition in adapters.py.
    rounds_table.create(op.get_bind())


def downgrade() -> None:
    op.drop_table(rounds_table.name, schema=rounds_table.schema)
