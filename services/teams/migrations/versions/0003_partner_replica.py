"""teams: replica of the partner apps published by activities (to authenticate partner reads)

Revision ID: 0003
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None
SCHEMA = "teams"


def upgrade() -> None:
    op.create_table(
        "partner_replica",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("provinces", postgresql.ARRAY(sa.String(16)), nullable=False),
        sa.Column("key_lookup", sa.String(12), nullable=False),
        sa.Column("key_sha256", sa.String(64), nullable=False),
        sa.Column("revoked", sa.Boolean, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema=SCHEMA,
    )
    # Not unique: replicas may briefly hold a lookup twice while events of two partners arrive.
    op.create_index(
        "ix_partner_replica_key_lookup", "partner_replica", ["key_lookup"], schema=SCHEMA
    )


def downgrade() -> None:
    op.drop_table("partner_replica", schema=SCHEMA)
