"""Policies, and the revision counter every change bumps.

Every change runs in `changing`, whose first write bumps `policy_revision.version`: the
changes are serialized (PostgreSQL's row lock, SQLite's write lock), each sees the
policies as the one before left them, and a reader compares one number to know whether
its compiled copy is current (`control_center.policy_set`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from control_center.store.models import Policy as PolicyRow
from control_center.store.models import PolicyRevision
from control_center.store.records import NewPolicy, Policy, PolicyChanges, User
from control_center.store.users import enabled_with_role
from orchestrator.clock import utcnow
from orchestrator.errors import Conflict, NotFound
from orchestrator.ids import new_id


def _policy_of(row: Mapping[Any, Any]) -> Policy:
    return Policy(
        id=row["id"],
        name=row["name"],
        version=row["version"],
        description=row["description"],
        rules=list(row["rules"]),
        enabled=row["enabled"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _row(new: NewPolicy, now: datetime) -> dict[str, Any]:
    return {
        "id": new_id(),
        "name": new.name,
        "version": new.version,
        "description": new.description,
        "rules": new.rules,
        "enabled": new.enabled,
        "created_at": now,
        "updated_at": now,
    }


async def _revision(connection: AsyncConnection) -> int | None:
    return (
        await connection.execute(select(PolicyRevision.version).where(PolicyRevision.id == 1))
    ).scalar_one_or_none()


async def _bump(connection: AsyncConnection) -> None:
    result = await connection.execute(
        update(PolicyRevision)
        .where(PolicyRevision.id == 1)
        .values(version=PolicyRevision.version + 1)
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        await connection.execute(insert(PolicyRevision).values(id=1, version=1))


async def _enabled(connection: AsyncConnection) -> list[Policy]:
    rows = await connection.execute(
        select(PolicyRow.__table__)
        .where(PolicyRow.enabled.is_(True))
        .order_by(PolicyRow.created_at, PolicyRow.id)
    )
    return [_policy_of(row) for row in rows.mappings()]


async def revision(engine: AsyncEngine) -> int:
    """The policies' revision: it moves with every change (0 before the first)."""
    async with engine.connect() as connection:
        return await _revision(connection) or 0


async def enabled_policies(engine: AsyncEngine) -> tuple[int, list[Policy]]:
    """The revision and the enabled policies, oldest first, read together."""
    async with engine.connect() as connection:
        return await _revision(connection) or 0, await _enabled(connection)


async def list_policies(engine: AsyncEngine, limit: int, offset: int) -> tuple[list[Policy], int]:
    """A page of the policies, oldest first, and how many there are in all."""
    async with engine.connect() as connection:
        total = await connection.execute(select(func.count()).select_from(PolicyRow))
        rows = await connection.execute(
            select(PolicyRow.__table__)
            .order_by(PolicyRow.created_at, PolicyRow.id)
            .limit(limit)
            .offset(offset)
        )
        return [_policy_of(row) for row in rows.mappings()], int(total.scalar_one())


async def get_policy(engine: AsyncEngine, policy_id: str) -> Policy:
    async with engine.connect() as connection:
        found = await connection.execute(
            select(PolicyRow.__table__).where(PolicyRow.id == policy_id)
        )
        row = found.mappings().first()
    if row is None:
        raise NotFound(f"policy '{policy_id}' not found")
    return _policy_of(row)


class PolicyWrites:
    """What one transaction of `changing` reads and writes."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def enabled(self) -> list[Policy]:
        """The enabled policies, oldest first, as this transaction sees them."""
        return await _enabled(self._connection)

    async def members(self, role: str) -> list[User]:
        """The enabled users holding `role`, as this transaction sees them."""
        return await enabled_with_role(self._connection, role)

    async def named(self, names: Sequence[str]) -> list[Policy]:
        rows = await self._connection.execute(
            select(PolicyRow.__table__).where(PolicyRow.name.in_(names))
        )
        return [_policy_of(row) for row in rows.mappings()]

    async def create(self, new: NewPolicy) -> Policy:
        row = _row(new, utcnow())
        try:
            await self._connection.execute(insert(PolicyRow), [row])
        except IntegrityError as exc:
            raise Conflict(f"a policy named '{new.name}' already exists") from exc
        return _policy_of(row)

    async def update(self, policy_id: str, changes: PolicyChanges) -> None:
        values = {name: getattr(changes, name) for name in changes.given()}
        try:
            result = await self._connection.execute(
                update(PolicyRow)
                .where(PolicyRow.id == policy_id)
                .values(**values, updated_at=utcnow())
            )
        except IntegrityError as exc:
            raise Conflict(f"a policy named '{changes.name}' already exists") from exc
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise NotFound(f"policy '{policy_id}' not found")

    async def delete(self, policy_id: str) -> None:
        result = await self._connection.execute(delete(PolicyRow).where(PolicyRow.id == policy_id))
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise NotFound(f"policy '{policy_id}' not found")

    async def disable(self, policy_id: str) -> str:
        """Disable the policy; return its name."""
        name = await self._connection.execute(
            update(PolicyRow)
            .where(PolicyRow.id == policy_id)
            .values(enabled=False, updated_at=utcnow())
            .returning(PolicyRow.name)
        )
        return str(name.scalar_one())


@asynccontextmanager
async def changing(engine: AsyncEngine) -> AsyncIterator[PolicyWrites]:
    """A transaction that changes policies: committed when the block ends, rolled back
    when it raises. The revision is bumped first."""
    async with engine.begin() as connection:
        await _bump(connection)
        yield PolicyWrites(connection)


async def seed_policies(engine: AsyncEngine, policies: Sequence[NewPolicy]) -> bool:
    """Create `policies` once per database (never again, even if deleted): False when
    the revision counter shows it was done."""
    try:
        async with engine.begin() as connection:
            if await _revision(connection) is not None:
                return False
            await connection.execute(insert(PolicyRevision).values(id=1, version=1))
            now = utcnow()
            await connection.execute(insert(PolicyRow), [_row(new, now) for new in policies])
    except IntegrityError:
        return False  # another process seeded them at the same moment
    return True
