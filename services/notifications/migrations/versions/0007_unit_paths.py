"""notifications: the path of every unit code, kept from the teams replica by a trigger

A score of a unit carries no path; its alert needs one (province rules, subscription scopes).
It was looked up per batch through a GIN index on `teams.unit_path` (a bitmap scan per code,
~60 µs each), now dropped (nothing else reads through it); `unit_paths` answers by primary key. Statement-level triggers with transition
tables keep it: one set-based upsert per statement that writes teams, whatever its size.

Revision ID: 0007
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# Every prefix of a path, keyed by its last code (any team's path wins for a code, as the GIN
# lookup's `LIMIT 1` did; the newest write in practice).
_PREFIXES = """
    SELECT DISTINCT ON (t.unit_path[i]) t.unit_path[i], t.unit_path[1:i]
    FROM {rows} t, generate_subscripts(t.unit_path, 1) AS i
    {where}
    ORDER BY t.unit_path[i]
"""
_UPSERT = """
    INSERT INTO notifications.unit_paths (code, path)
    {prefixes}
    ON CONFLICT (code) DO UPDATE SET path = excluded.path
    WHERE notifications.unit_paths.path IS DISTINCT FROM excluded.path
"""


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE IF NOT EXISTS notifications.unit_paths (
            code varchar(64) PRIMARY KEY,
            path varchar(64)[] NOT NULL
        )
        """
    )
    inserted = _UPSERT.format(prefixes=_PREFIXES.format(rows="new_rows", where=""))
    moved = _UPSERT.format(
        prefixes=_PREFIXES.format(
            rows="new_rows",
            where="WHERE NOT EXISTS (SELECT FROM old_rows o "
            "WHERE o.id = t.id AND o.unit_path = t.unit_path)",
        )
    )
    op.execute(
        f"""
        CREATE OR REPLACE FUNCTION notifications.remember_unit_paths() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                {inserted};
            ELSE
                {moved};
            END IF;
            RETURN NULL;
        END $$
        """
    )
    for operation, tables in (
        ("INSERT", "NEW TABLE AS new_rows"),
        ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
    ):
        op.execute(
            f"DROP TRIGGER IF EXISTS teams_unit_paths_{operation.lower()} ON notifications.teams"
        )
        op.execute(
            f"CREATE TRIGGER teams_unit_paths_{operation.lower()} AFTER {operation} "
            f"ON notifications.teams REFERENCING {tables} FOR EACH STATEMENT "
            "EXECUTE FUNCTION notifications.remember_unit_paths()"
        )
    op.execute(_UPSERT.format(prefixes=_PREFIXES.format(rows="notifications.teams", where="")))
    op.execute("DROP INDEX IF EXISTS notifications.ix_notifications_teams_unit_path")


def downgrade() -> None:
    for operation in ("insert", "update"):
        op.execute(f"DROP TRIGGER IF EXISTS teams_unit_paths_{operation} ON notifications.teams")
    op.execute("DROP FUNCTION IF EXISTS notifications.remember_unit_paths()")
    op.execute("DROP TABLE IF EXISTS notifications.unit_paths")
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_notifications_teams_unit_path "
        "ON notifications.teams USING gin (unit_path)"
    )
