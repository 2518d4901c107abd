"""notifications: the traceparent each delivery continues

Revision ID: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None
SCHEMA = "notifications"


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("traceparent", sa.Text), schema=SCHEMA)


def downgrade() -> None:
    op.drop_column("deliveries", "traceparent", schema=SCHEMA)
