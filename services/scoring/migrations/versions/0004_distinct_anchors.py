"""scoring: distinct values kept at their anchors only; weeks as hidden counters.

Teams, members and households are now counted where they live (the team; for households also
the lowest unit of its path) and summed upwards, and active weeks are hidden `w:<week>` counters
in the indicator sets: an activity touches ~6 distinct rows instead of ~64. The derived tables
are emptied here; the worker rebuilds them from the stored facts when it next starts
(`scoring.use_cases.rebuild_if_missing`), as `python -m scoring recompute` would. Also: a faster
`scoring.jsonb_add`, and an index that lets the publisher take every mark of a subject-period.

Revision ID: 0004
"""

from alembic import op

# Walks only the keys of the (small) delta, not those of the stored row (which the hidden week
# counters make larger): several times faster than 0003's aggregate over both objects.
JSONB_ADD = """
CREATE OR REPLACE FUNCTION scoring.jsonb_add(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (a || coalesce(jsonb_object_agg(key, total) FILTER (WHERE total <> 0), '{}'::jsonb))
           - coalesce(array_agg(key) FILTER (WHERE total = 0), '{}'::text[])
    FROM (
        SELECT key, coalesce((a ->> key)::bigint, 0) + value::bigint AS total
        FROM jsonb_each_text(b)
    ) s
$$
"""

JSONB_ADD_0003 = """
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

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(JSONB_ADD)
    op.execute("TRUNCATE scoring.indicator_sets, scoring.distinct_values")
    # the publisher takes every mark of the subject-periods it scores (coalescing)
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_dirty_subjects_key "
        "ON scoring.dirty_subjects (subject_type, subject_id, period)"
    )


def downgrade() -> None:
    # The old layout is rebuilt the same way by the previous version's recompute.
    op.execute("DROP INDEX IF EXISTS scoring.ix_dirty_subjects_key")
    op.execute(JSONB_ADD_0003)
    op.execute("TRUNCATE scoring.indicator_sets, scoring.distinct_values")
