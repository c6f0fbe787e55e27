"""The stored policy set: compiled once per revision for checks, and changed only in
ways that leave an administrator able to manage it.

Every change to a policy bumps the revision in the same transaction
(`control_center.store.policies.changing`). A check reads that one number and
recompiles only when it moved, so a change takes effect at the next request in both
apps, whichever process made it.

A change is refused (`Conflict`) when, evaluated in its own transaction, it would
leave no enabled administrator allowed to manage policies (`policies.lockout`): one
request must not lock everyone out with no request left to undo it. Changes are
serialized, so each one is judged on the policies as the one before left them.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from control_center.policies import (
    ADMIN_ROLE,
    DEFAULT_POLICIES,
    MANAGE_POLICIES,
    Decision,
    PolicyEngine,
    compile_policy,
    lockout,
)
from control_center.store import policies as store
from control_center.store.records import NewPolicy, Policy, PolicyChanges
from orchestrator.errors import Conflict
from orchestrator.http.access import Principal
from orchestrator.store.engine import AsyncEngine

_engines: weakref.WeakKeyDictionary[AsyncEngine, PolicyEngine] = weakref.WeakKeyDictionary()
_locks: weakref.WeakKeyDictionary[AsyncEngine, asyncio.Lock] = weakref.WeakKeyDictionary()


def _compiled(policies: list[Policy], revision: int) -> PolicyEngine:
    return PolicyEngine(
        (compile_policy(policy.id, policy.name, policy.rules) for policy in policies), revision
    )


async def policy_engine(engine: AsyncEngine) -> PolicyEngine:
    """The enabled policies as of now, compiled once per revision."""
    revision = await store.revision(engine)
    cached = _engines.get(engine)
    if cached is not None and cached.revision == revision:
        return cached
    lock = _locks.setdefault(engine, asyncio.Lock())
    async with lock:
        cached = _engines.get(engine)
        if cached is not None and cached.revision == revision:
            return cached
        revision, policies = await store.enabled_policies(engine)
        compiled = _compiled(policies, revision)
        _engines[engine] = compiled
        return compiled


async def _lockout(
    change: store.PolicyWrites, context: Mapping[str, Any] | None
) -> Decision | None:
    """`policies.lockout` on the policies and users this transaction sees."""
    administrators = [
        Principal(user.id, user.username, user.roles, "jwt")
        for user in await change.members(ADMIN_ROLE)
    ]
    return lockout(_compiled(await change.enabled(), 0), administrators, context)


@asynccontextmanager
async def _changing(
    engine: AsyncEngine, context: Mapping[str, Any] | None
) -> AsyncIterator[store.PolicyWrites]:
    """A transaction that changes policies, refused if it locks the administrators out.

    `context` is the request's (`ip`; conditions are evaluated as of now). When no
    administrator could manage policies before the change either, it is not refused:
    the rule protects what there is, it does not block whoever is mending it.
    """
    async with store.changing(engine) as change:
        before = await _lockout(change, context)
        yield change
        if before is None:
            after = await _lockout(change, context)
            if after is not None:
                action, resource = MANAGE_POLICIES
                raise Conflict(
                    "refused: after this change no enabled administrator could still "
                    f"manage policies ('{action}' on '{resource}': {after.reason}); "
                    "keep or add a rule that allows them first"
                )


async def create_policy(
    engine: AsyncEngine, new: NewPolicy, context: Mapping[str, Any] | None = None
) -> Policy:
    """Store a policy whose rules were checked by `compile_rules`."""
    async with _changing(engine, context) as change:
        return await change.create(new)


async def update_policy(
    engine: AsyncEngine,
    policy_id: str,
    changes: PolicyChanges,
    context: Mapping[str, Any] | None = None,
) -> None:
    async with _changing(engine, context) as change:
        await change.update(policy_id, changes)


async def delete_policy(
    engine: AsyncEngine, policy_id: str, context: Mapping[str, Any] | None = None
) -> None:
    async with _changing(engine, context) as change:
        await change.delete(policy_id)


def _default(default: dict[str, Any]) -> NewPolicy:
    return NewPolicy(
        name=default["name"], rules=default["rules"], description=default["description"]
    )


async def seed_default_policies(engine: AsyncEngine) -> bool:
    """Create the default policies once per database (never again, even if deleted)."""
    return await store.seed_policies(engine, [_default(policy) for policy in DEFAULT_POLICIES])


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
    wanted = [_default(policy) for policy in DEFAULT_POLICIES]
    changes: list[str] = []
    async with store.changing(engine) as change:
        found = {policy.name: policy for policy in await change.named([w.name for w in wanted])}
        for default in wanted:
            policy = found.get(default.name)
            if policy is None:
                await change.create(default)
                changes.append(f"created {default.name}")
                continue
            reset = (policy.rules, policy.description) != (default.rules, default.description)
            if reset:
                await change.update(
                    policy.id,
                    PolicyChanges(
                        name=default.name,
                        version=default.version,
                        description=default.description,
                        rules=default.rules,
                        enabled=True,
                    ),
                )
            elif not policy.enabled:
                await change.update(policy.id, PolicyChanges(enabled=True))
            if not policy.enabled:
                changes.append(f"re-enabled {default.name}")
            if reset:
                changes.append(f"reset {default.name} to its default rules")
        while (refused := await _lockout(change, None)) and refused.policy_id:
            # A Deny decided: each round disables one enabled policy, so this ends.
            name = await change.disable(refused.policy_id)
            action, resource = MANAGE_POLICIES
            changes.append(
                f"disabled {name}: it denied the administrators '{action}' on '{resource}'"
            )
    return Restored(changes, None if refused is None else refused.reason)
