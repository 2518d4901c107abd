"""teams: names searchable without case or accents ("hoa binh" finds "Hòa Bình"), sorted in
Vietnamese order

`teams.name_key(text)`: the name in lower case, diacritics off (`unaccent`, which also turns đ
into d), after a space (every word then starts after one); trigram GIN indexes on the keys of
the names of units, teams and members serve `LIKE '% hoa% binh%'` searches.

`public.vietnamese`: ICU's Vietnamese collation (a ă â b c d đ e ê …, tones after the
letters), or byte order where the server was built without ICU; indexes on (name, key) in it
serve pages of units and teams sorted by name.

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

# (index, table, key): pages sorted by name, the key breaking ties (the cursor's second half)
SORTED = (("ix_admin_units_name_vi", "admin_units", "code"), ("ix_teams_name_vi", "teams", "id"))


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
    op.execute(
        """
        DO $$
        BEGIN
          CREATE COLLATION IF NOT EXISTS public.vietnamese (provider = icu, locale = 'vi');
        EXCEPTION WHEN feature_not_supported THEN  -- a server built without ICU
          CREATE COLLATION IF NOT EXISTS public.vietnamese FROM "C";
        END $$
        """
    )
    for index, table, key in SORTED:
        op.execute(
            f"CREATE INDEX IF NOT EXISTS {index} ON teams.{table} "
            f"(name COLLATE public.vietnamese, {key})"
        )
    for index, table, column in SEARCHED:
        op.execute(
            f"CREATE INDEX IF NOT EXISTS {index} ON teams.{table} "
            f"USING gin (teams.name_key({column}) public.gin_trgm_ops)"
        )


def downgrade() -> None:
    for index, _, _ in SEARCHED:
        op.execute(f"DROP INDEX IF EXISTS teams.{index}")
    for index, _, _ in SORTED:
        op.execute(f"DROP INDEX IF EXISTS teams.{index}")
    op.execute("DROP FUNCTION IF EXISTS teams.name_key(text)")
    op.execute("DROP COLLATION IF EXISTS public.vietnamese")
