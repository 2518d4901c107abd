"""scoring: full recomputes run as background jobs (`POST /v1/recompute` answers 202 with one)

Revision ID: 0010
"""

from alembic import op

from scoring import adapters

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The first revision of this table: created from its definition in adapters.py.
    adapters.recompute_jobs.create(op.get_bind())


def downgrade() -> None:
    op.drop_table("recompute_jobs", schema="scoring")
