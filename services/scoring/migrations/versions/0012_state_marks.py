"""scoring: state indicators marked once per subject (not per period) for the background lane

Revision ID: 0012
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE IF NOT EXISTS scoring.state_marks (
            subject_type varchar(16) COLLATE "C" NOT NULL,
            subject_id varchar(64) COLLATE "C" NOT NULL,
            seq bigint GENERATED ALWAYS AS IDENTITY,
            first_marked_at timestamptz NOT NULL,
            last_marked_at timestamptz NOT NULL,
            month varchar(16) COLLATE "C" NOT NULL,
            traceparent text,
            PRIMARY KEY (subject_type, subject_id)
        )
        """
    )
    op.execute("CREATE INDEX IF NOT EXISTS ix_state_marks_seq ON scoring.state_marks (seq)")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS scoring.state_marks")
