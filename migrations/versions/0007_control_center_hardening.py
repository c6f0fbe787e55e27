"""control center hardening: access tokens checked against their session (the
revocation list goes); the audit chain keyed from the next record on; room for sealed
TOTP secrets

The TOTP secrets themselves are sealed by the control center when it starts (it has
the key; a migration does not): `bootstrap.seed`.

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # An access token is now accepted only while the refresh-token row that issued it
    # is not revoked: the list of revoked `jti`s says nothing more.
    with op.batch_alter_table("revoked_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_revoked_tokens_expires_at"))
    op.drop_table("revoked_tokens")

    # Records already in the log were hashed without a key: they stay checkable as
    # they are, reported as unkeyed; every record from the next one on is keyed.
    with op.batch_alter_table("audit_chain_head", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "keyed_from",
                sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                server_default=sa.text("0"),
                nullable=False,
            )
        )
    op.execute("UPDATE audit_chain_head SET keyed_from = seq + 1")

    # A sealed secret (`v1:` + base64 of nonce, ciphertext and tag) is longer than 64.
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.alter_column(
            "mfa_secret",
            existing_type=sa.String(length=64),
            type_=sa.String(length=255),
            existing_nullable=True,
        )


def downgrade() -> None:
    # The older version cannot open sealed TOTP secrets (nor would they fit): their
    # users lose MFA and enroll again. Keyed audit records stay: the older version
    # reports them as broken.
    op.execute(
        "DELETE FROM mfa_backup_codes "
        "WHERE user_id IN (SELECT id FROM users WHERE mfa_secret LIKE 'v1:%')"
    )
    op.execute(
        "UPDATE users SET mfa_secret = NULL, mfa_enabled = false, mfa_last_step = NULL "
        "WHERE mfa_secret LIKE 'v1:%'"
    )
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.alter_column(
            "mfa_secret",
            existing_type=sa.String(length=255),
            type_=sa.String(length=64),
            existing_nullable=True,
        )
    with op.batch_alter_table("audit_chain_head", schema=None) as batch_op:
        batch_op.drop_column("keyed_from")

    op.create_table(
        "revoked_tokens",
        sa.Column("jti", sa.String(length=36), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("jti", name=op.f("pk_revoked_tokens")),
    )
    with op.batch_alter_table("revoked_tokens", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_revoked_tokens_expires_at"), ["expires_at"], unique=False
        )
    # The older version reads revocations from this list only: fill it with the access
    # tokens of revoked sessions that have not expired yet.
    op.execute(
        "INSERT INTO revoked_tokens (jti, expires_at, revoked_at) "
        "SELECT DISTINCT access_jti, access_expires_at, CURRENT_TIMESTAMP FROM refresh_tokens "
        "WHERE revoked AND access_expires_at > CURRENT_TIMESTAMP"
    )
