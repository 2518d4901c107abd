"""notifications: unresolved alerts looked up by subject and period (a batch of scores at once)

Revision ID: 0006
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_alerts_open_subject_period "
        "ON notifications.alerts (subject_type, subject_id, period) WHERE status <> 'resolved'"
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS notifications.ix_alerts_open_subject_period")
