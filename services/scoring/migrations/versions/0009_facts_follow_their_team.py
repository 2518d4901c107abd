"""scoring: a team's activities count where the team is now

Facts take their team's place from the roster replica, and a team that moves takes its facts
along (`handlers.reroll_moved_teams`). Before, each fact kept the path its event carried, so a
team that had moved had facts under two places, and its members' and its own distinct counts
reached the ancestors of whichever place the consumer saw first, and a recompute whichever it
read last. Here: the index that finds a team's facts, and the facts of placed teams moved to
their team's place. When any fact moved, the derived tables are emptied and the worker rebuilds
them from the facts at its next start (`use_cases.rebuild_if_missing`).

Revision ID: 0009
"""

from alembic import op
from sqlalchemy import text

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX IF NOT EXISTS ix_facts_team ON scoring.activity_facts (team_id)")
    moved = op.get_bind().execute(
        text(
            """UPDATE scoring.activity_facts AS f
            SET province = t.province, district = t.district, commune = t.commune,
                village = t.village
            FROM scoring.team_state AS t
            WHERE t.team_id = f.team_id AND t.province IS NOT NULL AND f.recorded
              AND (f.province, f.district, f.commune, f.village)
                  IS DISTINCT FROM (t.province, t.district, t.commune, t.village)"""
        )
    )
    if moved.rowcount:
        op.execute("TRUNCATE scoring.indicator_sets, scoring.distinct_values")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS scoring.ix_facts_team")
