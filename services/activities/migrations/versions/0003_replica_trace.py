"""activities: the traceparent of the teams event behind each replicated team

Revision ID: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None
SCHEMA = "activities"


def upgrade() -> None:
    op.add_column("team_replica", sa.Column("traceparent", sa.Text), schema=SCHEMA)


def downgrade() -> None:
    op.drop_column("team_replica", "traceparent", schema=SCHEMA)
