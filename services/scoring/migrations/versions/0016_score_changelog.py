"""scoring: score versions are published from `score_history`, the changelog

New history rows are numbered by `seq` in publication order (the writers serialize on an
advisory lock, see `adapters.changelog`) and carry the trace context of the pass that wrote
them; `score_changelog` keeps how far the relay has published. Rows written before this
revision have no `seq`: they went out through the outbox.

Revision ID: 0016
"""

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE SEQUENCE scoring.score_changelog_seq")
    op.execute("ALTER TABLE scoring.score_history ADD COLUMN seq bigint")
    op.execute(
        "ALTER TABLE scoring.score_history"
        " ALTER COLUMN seq SET DEFAULT nextval('scoring.score_changelog_seq')"
    )
    op.execute("ALTER TABLE scoring.score_history ADD COLUMN traceparent text")
    op.execute("CREATE INDEX ix_score_history_seq ON scoring.score_history (seq)")
    op.execute(
        """
        CREATE TABLE scoring.score_changelog (
            one boolean PRIMARY KEY DEFAULT true CHECK (one),
            published_seq bigint NOT NULL
        )
        """
    )
    op.execute("INSERT INTO scoring.score_changelog (published_seq) VALUES (0)")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS scoring.score_changelog")
    op.execute("DROP INDEX IF EXISTS scoring.ix_score_history_seq")
    op.execute("ALTER TABLE scoring.score_history DROP COLUMN IF EXISTS traceparent")
    op.execute("ALTER TABLE scoring.score_history DROP COLUMN IF EXISTS seq")
    op.execute("DROP SEQUENCE IF EXISTS scoring.score_changelog_seq")
