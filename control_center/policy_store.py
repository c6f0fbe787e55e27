"""Policies in the database, and the per-engine cache of their compiled form.

Every change to a policy bumps `policy_revision.version` in the same transaction. A
check reads that one number and recompiles only when it moved, so a change takes
effect at the next request in both apps, whichever process made it.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from control_center.models import Policy, PolicyRevision
from control_center.policies import DEFAULT_POLICIES, PolicyEngine, compile_policy
from control_center.tokens import utcnow
from orchestrator.errors import Conflict, NotFound
from orchestrator.ids import new_id

_engines: weakref.WeakKeyDictionary[AsyncEngine, PolicyEngine] = weakref.WeakKeyDictionary()
_locks: weakref.WeakKeyDictionary[AsyncEngine, asyncio.Lock] = weakref.WeakKeyDictionary()


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


async def policy_engine(engine: AsyncEngine) -> PolicyEngine:
    """The enabled policies as of now, compiled once per revision."""
    async with engine.connect() as connection:
        revision = await _revision(connection) or 0
    cached = _engines.get(engine)
    if cached is not None and cached.revision == revision:
        return cached
    lock = _locks.setdefault(engine, asyncio.Lock())
    async with lock:
        cached = _engines.get(engine)
        if cached is not None and cached.revision == revision:
            return cached
        async with engine.connect() as connection:
            revision = await _revision(connection) or 0
            rows = (
                await connection.execute(
                    select(Policy.id, Policy.name, Policy.rules)
                    .where(Policy.enabled.is_(True))
                    .order_by(Policy.created_at, Policy.id)
                )
            ).all()
        compiled = PolicyEngine(
            (compile_policy(row.id, row.name, row.rules) for row in rows), revision
        )
        _engines[engine] = compiled
        return compiled


async def list_policies(
    engine: AsyncEngine, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    async with engine.connect() as connection:
        total = (await connection.execute(select(func.count()).select_from(Policy))).scalar_one()
        rows = await connection.execute(
            select(Policy.__table__)
            .order_by(Policy.created_at, Policy.id)
            .limit(limit)
            .offset(offset)
        )
        return [dict(row) for row in rows.mappings()], int(total)


async def get_policy(engine: AsyncEngine, policy_id: str) -> dict[str, Any]:
    async with engine.connect() as connection:
        row = (
            (await connection.execute(select(Policy.__table__).where(Policy.id == policy_id)))
            .mappings()
            .first()
        )
    if row is None:
        raise NotFound(f"policy '{policy_id}' not found")
    return dict(row)


async def create_policy(engine: AsyncEngine, fields: dict[str, Any]) -> dict[str, Any]:
    """Store a policy whose rules were checked by `compile_rules`."""
    now = utcnow()
    row = {"id": new_id(), "created_at": now, "updated_at": now, **fields}
    try:
        async with engine.begin() as connection:
            await connection.execute(insert(Policy), [row])
            await _bump(connection)
    except IntegrityError as exc:
        raise Conflict(f"a policy named '{fields['name']}' already exists") from exc
    return row


async def update_policy(engine: AsyncEngine, policy_id: str, fields: dict[str, Any]) -> None:
    try:
        async with engine.begin() as connection:
            result = await connection.execute(
                update(Policy).where(Policy.id == policy_id).values(**fields, updated_at=utcnow())
            )
            if result.rowcount == 0:  # type: ignore[attr-defined]
                raise NotFound(f"policy '{policy_id}' not found")
            await _bump(connection)
    except IntegrityError as exc:
        raise Conflict(f"a policy named '{fields.get('name')}' already exists") from exc


async def delete_policy(engine: AsyncEngine, policy_id: str) -> None:
    async with engine.begin() as connection:
        result = await connection.execute(delete(Policy).where(Policy.id == policy_id))
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise NotFound(f"policy '{policy_id}' not found")
        await _bump(connection)


async def seed_default_policies(engine: AsyncEngine) -> bool:
    """Create the default policies once per database (never again, even if deleted)."""
    try:
        async with engine.begin() as connection:
            if await _revision(connection) is not None:
                return False
            await connection.execute(insert(PolicyRevision).values(id=1, version=1))
            now = utcnow()
            await connection.execute(
                insert(Policy),
                [
                    {
                        "id": new_id(),
                        "name": policy["name"],
                        "version": "1.0.0",
                        "description": policy["description"],
                        "rules": policy["rules"],
                        "enabled": True,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for policy in DEFAULT_POLICIES
                ],
            )
    except IntegrityError:
        return False  # another process seeded them at the same moment
    return True
