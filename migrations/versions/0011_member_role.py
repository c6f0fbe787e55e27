"""the default `member_access_policy` (the role self-registered accounts get) for
databases seeded before it existed

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

from alembic import op

from migrations.default_policies import add_default_policy

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_default_policy(op.get_bind(), "member_access_policy")


def downgrade() -> None:
    # What the upgrade added cannot be told from the same policy made by the first
    # seeding: left in place (a policy is data, not schema).
    pass
