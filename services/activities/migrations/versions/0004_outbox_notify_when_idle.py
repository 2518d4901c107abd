"""activities: the outbox trigger wakes the relay only when it may be idle (no commit-serializing
NOTIFY on every insert; see common.migrations.install_outbox_notify)

Revision ID: 0004
"""

from alembic import op

from common.migrations import install_outbox_notify

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    install_outbox_notify(op, "activities")


def downgrade() -> None:
    install_outbox_notify(op, "activities", only_when_idle=False)
