"""Policies in the database, and the per-engine cache of their compiled form.

Every change to a policy bumps `policy_revision.version` in the same transaction. A
check reads that one number and recompiles only when it moved, so a change takes
effect at the next request in both apps, whichever process made it.

A change is refused (`Conflict`) when, evaluated in its own transaction, it would
leave no enabled administrator allowed to manage policies (`policies.lockout`): one
request must not lock everyone out with no request left to undo it. The bump is each
change's first write, so changes are serialized (PostgreSQL's row lock, SQLite's write
lock) and each one is judged on the policies as the one before left them.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from control_center import accounts
from control_center.models import Policy, PolicyRevision
from control_center.policies import (
    ADMIN_ROLE,
    DEFAULT_POLICIES,
    MANAGE_POLICIES,
    Decision,
    PolicyEngine,
    compile_policy,
    lockout,
)
from control_center.tokens import utcnow
from orchestrator.errors import Conflict, NotFound
from orchestrator.http.access import Principal
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


async def _compiled(connection: AsyncConnection, revision: int) -> PolicyEngine:
    rows = (
        await connection.execute(
            select(Policy.id, Policy.name, Policy.rules)
            .where(Policy.enabled.is_(True))
            .order_by(Policy.created_at, Policy.id)
        )
    ).all()
    return PolicyEngine((compile_policy(row.id, row.name, row.rules) for row in rows), revision)


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
            compiled = await _compiled(connection, await _revision(connection) or 0)
        _engines[engine] = compiled
        return compiled


async def _lockout(
    connection: AsyncConnection, context: Mapping[str, Any] | None
) -> Decision | None:
    """`policies.lockout` on the policies and users this transaction sees."""
    administrators = [
        Principal(row.id, row.username, tuple(str(role) for role in row.roles), "jwt")
        for row in await accounts.enabled_with_role(connection, ADMIN_ROLE)
    ]
    return lockout(await _compiled(connection, 0), administrators, context)


@asynccontextmanager
async def _changing(
    engine: AsyncEngine, context: Mapping[str, Any] | None
) -> AsyncIterator[AsyncConnection]:
    """A transaction that changes policies, refused if it locks the administrators out.

    `context` is the request's (`ip`; conditions are evaluated as of now). When no
    administrator could manage policies before the change either, it is not refused:
    the rule protects what there is, it does not block whoever is mending it.
    """
    async with engine.begin() as connection:
        await _bump(connection)
        before = await _lockout(connection, context)
        yield connection
        if before is None:
            after = await _lockout(connection, context)
            if after is not None:
                action, resource = MANAGE_POLICIES
                raise Conflict(
                    "refused: after this change no enabled administrator could still "
                    f"manage policies ('{action}' on '{resource}': {after.reason}); "
                    "keep or add a rule that allows them first"
                )


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


async def create_policy(
    engine: AsyncEngine, fields: dict[str, Any], context: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Store a policy whose rules were checked by `compile_rules`."""
    now = utcnow()
    row = {"id": new_id(), "created_at": now, "updated_at": now, **fields}
    try:
        async with _changing(engine, context) as connection:
            await connection.execute(insert(Policy), [row])
    except IntegrityError as exc:
        raise Conflict(f"a policy named '{fields['name']}' already exists") from exc
    return row


async def update_policy(
    engine: AsyncEngine,
    policy_id: str,
    fields: dict[str, Any],
    context: Mapping[str, Any] | None = None,
) -> None:
    try:
        async with _changing(engine, context) as connection:
            result = await connection.execute(
                update(Policy).where(Policy.id == policy_id).values(**fields, updated_at=utcnow())
            )
            if result.rowcount == 0:  # type: ignore[attr-defined]
                raise NotFound(f"policy '{policy_id}' not found")
    except IntegrityError as exc:
        raise Conflict(f"a policy named '{fields.get('name')}' already exists") from exc


async def delete_policy(
    engine: AsyncEngine, policy_id: str, context: Mapping[str, Any] | None = None
) -> None:
    async with _changing(engine, context) as connection:
        result = await connection.execute(delete(Policy).where(Policy.id == policy_id))
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise NotFound(f"policy '{policy_id}' not found")


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
                    {"id": new_id(), "created_at": now, "updated_at": now, **_default_row(policy)}
                    for policy in DEFAULT_POLICIES
                ],
            )
    except IntegrityError:
        return False  # another process seeded them at the same moment
    return True


@dataclass(frozen=True, slots=True)
class Restored:
    """What `restore_default_policies` did, one line per change."""

    changes: list[str]
    #: Why the administrators still cannot manage policies; None when they can.
    problem: str | None


async def restore_default_policies(engine: AsyncEngine) -> Restored:
    """The owner's way back (`provisioning policies restore-defaults`, which needs the
    database, not the API): create the missing default policies, re-enable and reset
    the others, then disable each policy whose Deny still keeps every enabled
    administrator from managing policies."""
    names = [policy["name"] for policy in DEFAULT_POLICIES]
    changes: list[str] = []
    async with engine.begin() as connection:
        await _bump(connection)
        rows = await connection.execute(select(Policy.__table__).where(Policy.name.in_(names)))
        found = {row.name: row for row in rows}
        now = utcnow()
        for default in DEFAULT_POLICIES:
            name, wanted = default["name"], _default_row(default)
            row = found.get(name)
            if row is None:
                await connection.execute(
                    insert(Policy),
                    [{"id": new_id(), "created_at": now, "updated_at": now, **wanted}],
                )
                changes.append(f"created {name}")
                continue
            values: dict[str, Any] = {}
            if not row.enabled:
                values["enabled"] = True
                changes.append(f"re-enabled {name}")
            if (row.rules, row.description) != (wanted["rules"], wanted["description"]):
                values.update(wanted)
                changes.append(f"reset {name} to its default rules")
            if values:
                await connection.execute(
                    update(Policy).where(Policy.id == row.id).values(**values, updated_at=now)
                )
        while (refused := await _lockout(connection, None)) and refused.policy_id:
            # A Deny decided: each round disables one enabled policy, so this ends.
            name = (
                await connection.execute(
                    update(Policy)
                    .where(Policy.id == refused.policy_id)
                    .values(enabled=False, updated_at=now)
                    .returning(Policy.name)
                )
            ).scalar_one()
            action, resource = MANAGE_POLICIES
            changes.append(
                f"disabled {name}: it denied the administrators '{action}' on '{resource}'"
            )
    return Restored(changes, None if refused is None else refused.reason)


def _default_row(default: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": default["name"],
        "version": "1.0.0",
        "description": default["description"],
        "rules": default["rules"],
        "enabled": True,
    }
