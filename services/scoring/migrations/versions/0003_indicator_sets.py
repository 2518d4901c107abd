"""scoring: one indicator row per subject-period (JSONB counters), trace context on dirty marks.

`indicator_values` held one row per (subject, period, indicator): an activity touched ~190 rows.
`indicator_sets` holds all counters of a subject-period in one JSONB object, merged on upsert by
`scoring.jsonb_add` (sums values by key, drops zeros), so an activity touches ~19 rows.

Revision ID: 0003
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

JSONB_ADD = """
CREATE OR REPLACE FUNCTION scoring.jsonb_add(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(jsonb_object_agg(key, total), '{}'::jsonb)
    FROM (
        SELECT key, sum(value::bigint) AS total
        FROM (SELECT * FROM jsonb_each_text(a) UNION ALL SELECT * FROM jsonb_each_text(b)) e
        GROUP BY key
    ) s
    WHERE total <> 0
$$
"""


def upgrade() -> None:
    op.execute(JSONB_ADD)
    op.execute(
        """
        CREATE TABLE scoring.indicator_sets (
            subject_type varchar(16) NOT NULL,
            subject_id varchar(64) NOT NULL,
            period varchar(80) NOT NULL,
            indicators jsonb NOT NULL,
            PRIMARY KEY (subject_type, subject_id, period)
        )
        """
    )
    op.execute(
        "CREATE INDEX ix_indicator_sets_empty ON scoring.indicator_sets (subject_type) "
        "WHERE indicators = '{}'::jsonb"
    )
    op.execute(
        """
        INSERT INTO scoring.indicator_sets (subject_type, subject_id, period, indicators)
        SELECT subject_type, subject_id, period, jsonb_object_agg(indicator, value)
        FROM scoring.indicator_values WHERE value <> 0
        GROUP BY subject_type, subject_id, period
        """
    )
    op.execute("DROP TABLE scoring.indicator_values")
    op.execute("ALTER TABLE scoring.dirty_subjects ADD COLUMN IF NOT EXISTS traceparent text")


def downgrade() -> None:
    op.execute(
        """
        CREATE TABLE scoring.indicator_values (
            subject_type varchar(16) NOT NULL,
            subject_id varchar(64) NOT NULL,
            period varchar(80) NOT NULL,
            indicator varchar(80) NOT NULL,
            value bigint NOT NULL,
            PRIMARY KEY (subject_type, subject_id, period, indicator)
        )
        """
    )
    op.execute(
        "CREATE INDEX ix_indicator_values_zero ON scoring.indicator_values (subject_type) "
        "WHERE value = 0"
    )
    op.execute(
        """
        INSERT INTO scoring.indicator_values
        SELECT s.subject_type, s.subject_id, s.period, e.key, e.value::bigint
        FROM scoring.indicator_sets s, jsonb_each_text(s.indicators) e
        """
    )
    op.execute("DROP TABLE scoring.indicator_sets")
    op.execute("DROP FUNCTION scoring.jsonb_add(jsonb, jsonb)")
    op.execute("ALTER TABLE scoring.dirty_subjects DROP COLUMN IF EXISTS traceparent")
