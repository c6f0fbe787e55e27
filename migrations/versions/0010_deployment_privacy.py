"""the default `deployment_privacy_policy` for databases seeded before it existed

Default policies are created once, when a database is first seeded, and never again
(an administrator may delete one). A default added later reaches the databases seeded
before it through a migration like this one: once, and only where no policy of its name
exists. A database not seeded yet gets it with the others.

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence
from datetime import UTC, datetime
from uuid import uuid4

import sqlalchemy as sa
from alembic import op

from control_center.policies import DEFAULT_POLICIES

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME = "deployment_privacy_policy"

policies = sa.table(
    "policies",
    sa.column("id", sa.String),
    sa.column("name", sa.String),
    sa.column("version", sa.String),
    sa.column("description", sa.Text),
    sa.column("rules", sa.JSON),
    sa.column("enabled", sa.Boolean),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("updated_at", sa.DateTime(timezone=True)),
)
revisions = sa.table(
    "policy_revision", sa.column("id", sa.Integer), sa.column("version", sa.Integer)
)


def upgrade() -> None:
    connection = op.get_bind()
    seeded = connection.execute(sa.select(revisions.c.version).where(revisions.c.id == 1)).first()
    if seeded is None:
        return  # the first start seeds every default, this one among them
    if connection.execute(sa.select(policies.c.id).where(policies.c.name == NAME)).first():
        return
    default = next(policy for policy in DEFAULT_POLICIES if policy["name"] == NAME)
    now = datetime.now(UTC)
    connection.execute(
        policies.insert().values(
            id=str(uuid4()),
            name=NAME,
            version="1.0.0",
            description=default["description"],
            rules=default["rules"],
            enabled=True,
            created_at=now,
            updated_at=now,
        )
    )
    # Every app's cached policy set is reloaded at its next check.
    connection.execute(
        revisions.update().where(revisions.c.id == 1).values(version=revisions.c.version + 1)
    )


def downgrade() -> None:
    # What the upgrade added cannot be told from the same policy made by the first
    # seeding: left in place (a policy is data, not schema).
    pass
