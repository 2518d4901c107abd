"""teams: the outbox trigger notifies only an idle relay (common.migrations.install_outbox_notify)

Revision ID: 0004
"""

from common.migrations import outbox_notify_when_idle

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None
upgrade, downgrade = outbox_notify_when_idle("teams")
