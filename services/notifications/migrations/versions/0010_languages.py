"""notifications: alerts keep their message (id and arguments) to be rendered in each reader's
language; webhook subscriptions choose theirs (Vietnamese unless told)

Revision ID: 0010
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None
SCHEMA = "notifications"


def upgrade() -> None:
    op.add_column("alerts", sa.Column("message", JSONB()), schema=SCHEMA)
    op.add_column(
        "subscriptions",
        sa.Column("language", sa.String(8), nullable=False, server_default="vi"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_column("subscriptions", "language", schema=SCHEMA)
    op.drop_column("alerts", "message", schema=SCHEMA)
