"""control center hardening: access tokens checked against their session (the
revocation list goes)

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


def downgrade() -> None:
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
