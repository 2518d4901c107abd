"""scoring: outbox payloads and headers as `json`, not `jsonb` (common.migrations.outbox_storage)

Revision ID: 0006
"""

from common.migrations import outbox_storage

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None
upgrade, downgrade = outbox_storage("scoring")
