"""scoring: codes and names that key rows compare byte by byte (collation "C")

Under the database's default collation (C.UTF-8 or en_US.UTF-8 from initdb) PostgreSQL 15
compares text through the C library's strcoll: in every B-tree probe of an upsert and every
sort. Byte order is what these identifiers need (nothing here is shown sorted to people) and is
how Python sorts the keys it sends, so rows are locked in one order on both sides.
Measured on 2026-11-30 (docs/performance.md): inserting 1.25 million distinct values in key
order, 7.6 s → 4.3 s; the full recompute of 200,000 facts 2-5 % faster and `apply_batch` 1-2 %
faster in paired runs (small beside this machine's run-to-run noise, but in the same direction
every time).

Changing a column's collation rebuilds the indexes that use it; the table is not rewritten.

Revision ID: 0008
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# table -> (column, varchar length); frozen here, as the definitions in adapters.py stood
KEY_COLUMNS: dict[str, tuple[tuple[str, int], ...]] = {
    "activity_facts": (("province", 64), ("district", 64), ("commune", 64), ("village", 64)),
    "admin_units": (("code", 64), ("level", 16)),
    "dirty_subjects": (("subject_type", 16), ("subject_id", 64), ("period", 80)),
    "distinct_values": (
        ("subject_type", 16),
        ("subject_id", 64),
        ("period", 80),
        ("dim", 16),
        ("value", 128),
    ),
    "indicator_sets": (("subject_type", 16), ("subject_id", 64), ("period", 80)),
    "scores": (("subject_type", 16), ("subject_id", 64), ("period", 80), ("criteria_set", 80)),
    "state_values": (("subject_type", 16), ("subject_id", 64), ("indicator", 80)),
    "subjects": (
        ("subject_type", 16),
        ("subject_id", 64),
        ("parent_type", 16),
        ("parent_id", 64),
        ("province", 64),
        ("district", 64),
        ("commune", 64),
        ("village", 64),
    ),
    "targets": (("subject_type", 16), ("subject_id", 64), ("period", 80), ("indicator", 80)),
    "team_state": (("province", 64), ("district", 64), ("commune", 64), ("village", 64)),
}


def _set_collation(collation: str) -> None:
    for table, columns in KEY_COLUMNS.items():
        changes = ", ".join(
            f'ALTER COLUMN {name} TYPE varchar({length}) COLLATE "{collation}"'
            for name, length in columns
        )
        op.execute(f"ALTER TABLE scoring.{table} {changes}")


def upgrade() -> None:
    _set_collation("C")


def downgrade() -> None:
    _set_collation("default")
