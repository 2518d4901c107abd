"""teams: outbox payloads and headers as `json`, not `jsonb` (common.migrations.outbox_storage)

Revision ID: 0005
"""

from common.migrations import outbox_storage

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None
upgrade, downgrade = outbox_storage("teams")
