"""notifications: outbox payloads and headers as `json`, not `jsonb` (common.migrations.outbox_plain_json)

Revision ID: 0005
"""

from common.migrations import outbox_plain_json

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None
upgrade, downgrade = outbox_plain_json("notifications")
