"""teams: names searchable without case or accents ("hoa binh" finds "Hòa Bình")

`teams.name_key(text)`: the name in lower case, diacritics off (`unaccent`, which also turns đ
into d), after a space (every word then starts after one); trigram GIN indexes on the keys of
the names of units, teams and members serve `LIKE '% hoa% binh%'` searches.

Revision ID: 0006
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# (index, table, column)
SEARCHED = (
    ("ix_admin_units_name_search", "admin_units", "name"),
    ("ix_teams_name_search", "teams", "name"),
    ("ix_members_name_search", "members", "full_name"),
)


def upgrade() -> None:
    # Both are trusted extensions: a database owner may create them.
    op.execute("CREATE EXTENSION IF NOT EXISTS unaccent WITH SCHEMA public")
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public")
    # unaccent() is only STABLE (its dictionary could change); with the dictionary named, the
    # result is fixed for a given text, which an expression index needs (the usual recipe).
    op.execute(
        """
        CREATE OR REPLACE FUNCTION teams.name_key(value text) RETURNS text
        LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
        RETURN ' ' || lower(public.unaccent('public.unaccent'::regdictionary, value))
        """
    )
    for index, table, column in SEARCHED:
        op.execute(
            f"CREATE INDEX IF NOT EXISTS {index} ON teams.{table} "
            f"USING gin (teams.name_key({column}) public.gin_trgm_ops)"
        )


def downgrade() -> None:
    for index, _, _ in SEARCHED:
        op.execute(f"DROP INDEX IF EXISTS teams.{index}")
    op.execute("DROP FUNCTION IF EXISTS teams.name_key(text)")
