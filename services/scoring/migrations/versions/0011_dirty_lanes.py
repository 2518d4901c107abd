"""scoring: dirty marks in two lanes, live activities ahead of bulk re-scoring

Revision ID: 0011
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # IF NOT EXISTS: revision 0002 creates the table from its current definition.
    op.execute(
        "ALTER TABLE scoring.dirty_subjects "
        "ADD COLUMN IF NOT EXISTS lane smallint NOT NULL DEFAULT 0"
    )
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_dirty_subjects_lane ON scoring.dirty_subjects (lane, seq)"
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS scoring.ix_dirty_subjects_lane")
    op.execute("ALTER TABLE scoring.dirty_subjects DROP COLUMN IF EXISTS lane")
