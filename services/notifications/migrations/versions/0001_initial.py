"""notifications: outbox and processed events

Revision ID: 0001
"""

from alembic import op

from common.migrations import create_outbox_objects, drop_outbox_objects

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None
SCHEMA = "notifications"


def upgrade() -> None:
    create_outbox_objects(op, SCHEMA)


def downgrade() -> None:
    drop_outbox_objects(op, SCHEMA)
