"""scoring: the rankings index on scores ends with subject_id; components and indicators as json

1. The rankings index ends with subject_id (a probe by key reads one row).

The publisher looks up its siblings' scores by their whole key. With the former index on
(period, criteria_set, subject_type), stale statistics led the planner to probe that index and
filter on subject_id: ~500 rows read per probe at 40,000 scores, about 1 s of a publication
pass, growing with the table. Ending the index with subject_id makes either index a one-row
probe; rankings still scan its (period, criteria set, level) prefix.

2. `scores.components` and `scores.indicators` become `json` (lz4-compressed where available),
   like the outbox payloads in 0006: stored and served as written, never queried inside, so
   jsonb's parse on every upsert was pure cost.

Revision ID: 0007
"""

from alembic import op

from common.migrations import compress_with_lz4, convert_columns

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None
SCORE_DOCUMENTS = ("components", "indicators")


def upgrade() -> None:
    # Fresh databases already have it (0002 creates the tables from their definitions).
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_scores_ranking "
        "ON scoring.scores (period, criteria_set, subject_type, subject_id)"
    )
    op.execute("DROP INDEX IF EXISTS scoring.ix_scores_period")
    convert_columns(op, "scoring.scores", SCORE_DOCUMENTS, to="json")
    compress_with_lz4(op, "scoring.scores", "components", "indicators")


def downgrade() -> None:
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_scores_period "
        "ON scoring.scores (period, criteria_set, subject_type)"
    )
    op.execute("DROP INDEX IF EXISTS scoring.ix_scores_ranking")
    convert_columns(op, "scoring.scores", SCORE_DOCUMENTS, to="jsonb")
