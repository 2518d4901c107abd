"""teams: administrative units, crosswalk, members, trainings; teams gain dissolution

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None
SCHEMA = "teams"


def upgrade() -> None:
    op.create_table(
        "admin_units",
        sa.Column("code", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("parent_code", sa.String(64), index=True),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("valid_from", sa.Date),
        sa.Column("valid_to", sa.Date),
        sa.Column(
            "replaced_by",
            postgresql.ARRAY(sa.String(64)),
            nullable=False,
            server_default=sa.text("'{}'"),
        ),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint(
            "level IN ('province', 'district', 'commune', 'village')", name="ck_admin_units_level"
        ),
        schema=SCHEMA,
    )
    # Subtree queries are prefix matches on the materialised path.
    op.create_index(
        "ix_admin_units_path",
        "admin_units",
        ["path"],
        schema=SCHEMA,
        postgresql_ops={"path": "text_pattern_ops"},
    )
    op.create_index("ix_admin_units_level", "admin_units", ["level"], schema=SCHEMA)
    op.create_table(
        "unit_crosswalk",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("old_code", sa.String(64), nullable=False, index=True),
        sa.Column("new_code", sa.String(64), nullable=False, index=True),
        sa.Column("change", sa.String(16), nullable=False),
        sa.Column("effective_on", sa.Date, nullable=False),
        sa.Column("old_parent_code", sa.String(64)),
        sa.Column("new_parent_code", sa.String(64)),
        sa.Column(
            "recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema=SCHEMA,
    )
    op.add_column("teams", sa.Column("dissolved_on", sa.Date), schema=SCHEMA)
    op.create_table(
        "members",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("code", sa.String(64), unique=True),
        sa.Column(
            "team_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey(f"{SCHEMA}.teams.id"),
            nullable=False,
            index=True,
        ),
        sa.Column("full_name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("affiliation", sa.String(32), nullable=False),
        sa.Column("enterprise_name", sa.String(200)),
        sa.Column("phone", sa.String(20)),
        sa.Column("joined_on", sa.Date, nullable=False),
        sa.Column("left_on", sa.Date),
        sa.Column("trained", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("removed", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema=SCHEMA,
    )
    op.create_table(
        "trainings",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "member_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey(f"{SCHEMA}.members.id"),
            nullable=False,
        ),
        sa.Column("course", sa.String(200), nullable=False),
        sa.Column("topic", sa.String(200)),
        sa.Column("completed_on", sa.Date, nullable=False),
        sa.Column(
            "recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.UniqueConstraint("member_id", "course", "completed_on", name="uq_trainings_member"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("trainings", schema=SCHEMA)
    op.drop_table("members", schema=SCHEMA)
    op.drop_column("teams", "dissolved_on", schema=SCHEMA)
    op.drop_table("unit_crosswalk", schema=SCHEMA)
    op.drop_table("admin_units", schema=SCHEMA)
