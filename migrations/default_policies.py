"""Giving a default policy added after the first release to databases seeded before it.

Default policies are created once, when a database is first seeded, and never again (an
administrator may delete one). A default added later reaches the databases seeded before
it through a migration that calls `add_default_policy`: once, and only where no policy
of its name exists. A database not seeded yet gets it with the others at its first start.
"""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from control_center.policies import DEFAULT_POLICIES

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


def add_default_policy(connection: Connection, name: str) -> None:
    """Insert the default policy `name` into a seeded database that has none of its name,
    and bump the policy revision so that every app reloads its cached policy set."""
    seeded = connection.execute(sa.select(revisions.c.version).where(revisions.c.id == 1)).first()
    if seeded is None:
        return  # the first start seeds every default, this one among them
    if connection.execute(sa.select(policies.c.id).where(policies.c.name == name)).first():
        return
    default = next(policy for policy in DEFAULT_POLICIES if policy["name"] == name)
    now = datetime.now(UTC)
    connection.execute(
        policies.insert().values(
            id=str(uuid4()),
            name=name,
            version="1.0.0",
            description=default["description"],
            rules=default["rules"],
            enabled=True,
            created_at=now,
            updated_at=now,
        )
    )
    connection.execute(
        revisions.update().where(revisions.c.id == 1).values(version=revisions.c.version + 1)
    )
