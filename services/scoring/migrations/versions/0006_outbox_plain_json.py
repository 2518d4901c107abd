"""scoring: outbox payloads and headers as `json`, not `jsonb` (common.migrations.outbox_plain_json)

Revision ID: 0006
"""

from common.migrations import outbox_plain_json

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None
upgrade, downgrade = outbox_plain_json("scoring")
