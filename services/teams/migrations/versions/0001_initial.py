"""teams: outbox, processed events, teams

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from common.migrations import create_outbox_objects, drop_outbox_objects

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None
SCHEMA = "teams"


def upgrade() -> None:
    create_outbox_objects(op, SCHEMA)
    op.create_table(
        "teams",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("code", sa.String(64), nullable=False, unique=True),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("unit_code", sa.String(64), nullable=False, index=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("established_on", sa.Date),
        sa.Column("decision_no", sa.String(100)),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("teams", schema=SCHEMA)
    drop_outbox_objects(op, SCHEMA)
