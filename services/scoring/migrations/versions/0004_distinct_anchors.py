"""scoring: distinct values kept at their anchors only; weeks as hidden counters.

Teams, members and households are now counted where they live (the team; for households also
the lowest unit of its path) and summed upwards, and active weeks are hidden `w:<week>` counters
in the indicator sets: an activity touches ~6 distinct rows instead of ~64. The derived tables
are emptied here; the worker rebuilds them from the stored facts when it next starts
(`scoring.service.rebuild_if_missing`), as `python -m scoring recompute` would.

Revision ID: 0004
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("TRUNCATE scoring.indicator_sets, scoring.distinct_values")


def downgrade() -> None:
    # The old layout is rebuilt the same way by the previous version's recompute.
    op.execute("TRUNCATE scoring.indicator_sets, scoring.distinct_values")
