"""teams: the local identity provider's accounts, role assignments, invitations, signing keys

The teams service issues access tokens when no external OpenID Connect provider is configured
(`CDT_OIDC_ISSUER` unset or pointing at it). Passwords are argon2id hashes; invitation codes are
kept as SHA-256 only; at most one signing key is active (a partial unique index), retired keys
stay published until the tokens they signed have expired.

Revision ID: 0007
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None
SCHEMA = "teams"


def upgrade() -> None:
    now = sa.text("now()")
    op.create_table(
        "accounts",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("password_hash", sa.Text),
        sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("disabled_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=now),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_accounts_disabled_at",
        "accounts",
        ["disabled_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("disabled"),
    )
    op.create_table(
        "account_roles",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column(
            "account_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey(f"{SCHEMA}.accounts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("unit_code", sa.String(64)),
        schema=SCHEMA,
    )
    op.create_index("ix_account_roles_account_id", "account_roles", ["account_id"], schema=SCHEMA)
    op.create_table(
        "invitations",
        sa.Column("code_sha256", sa.String(64), primary_key=True),
        sa.Column(
            "account_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey(f"{SCHEMA}.accounts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("redeemed_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=now),
        schema=SCHEMA,
    )
    op.create_index("ix_invitations_account_id", "invitations", ["account_id"], schema=SCHEMA)
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(64), primary_key=True),
        sa.Column("algorithm", sa.String(16), nullable=False),
        sa.Column("private_key_pem", sa.Text, nullable=False),
        sa.Column("public_jwk", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.Column("retired_at", sa.DateTime(timezone=True)),
        schema=SCHEMA,
    )
    op.execute(
        f"CREATE UNIQUE INDEX ux_signing_keys_active ON {SCHEMA}.signing_keys ((true)) "
        "WHERE retired_at IS NULL"
    )


def downgrade() -> None:
    for table in ("signing_keys", "invitations", "account_roles", "accounts"):
        op.drop_table(table, schema=SCHEMA)
