"""teams: the audit trail, one row per state-changing request, append-only (`common.audit`)

Revision ID: 0008
"""

from alembic import op

from common.migrations import create_audit_log, drop_audit_log

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_audit_log(op, "teams")


def downgrade() -> None:
    drop_audit_log(op, "teams")
