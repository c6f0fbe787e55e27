"""The audit log's rows: appending to the chain, reading it back, and listing records.

Writers are serialized so the chain cannot fork: each append runs in one transaction
that first updates the one-row `audit_chain_head` (on PostgreSQL after taking
`pg_advisory_xact_lock`; on SQLite that first write takes the database's write lock,
as `BEGIN IMMEDIATE` would), then reads the previous hash, inserts, and moves the head.
How a record's hash is made is the caller's (`control_center.audit`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import fields
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from control_center.store.models import AuditChainHead, AuditRecord
from control_center.store.records import AuditEntry, AuditFields, ChainHead

#: Any constant: the key of the advisory lock audit writers take on PostgreSQL.
ADVISORY_LOCK_KEY = 0x70726F76  # "prov"
#: The hash before the first record.
GENESIS = ""


def _entry_of(row: Mapping[Any, Any]) -> AuditEntry:
    return AuditEntry(
        id=row["id"],
        timestamp=row["timestamp"],
        user_id=row["user_id"],
        action=row["action"],
        resource=row["resource"],
        result=row["result"],
        details=row["details"],
        ip=row["ip"],
        seq=row["seq"],
        hash=row["hash"],
    )


async def _lock_head(connection: AsyncConnection) -> str:
    """Take the writers' lock and return the newest record's hash."""
    if connection.dialect.name == "postgresql":
        await connection.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY}
        )
    locked = await connection.execute(
        update(AuditChainHead).where(AuditChainHead.id == 1).values(hash=AuditChainHead.hash)
    )
    if locked.rowcount == 0:  # type: ignore[attr-defined]
        # The first record ever: the insert takes the same lock the update would have.
        # Every record of a chain started with a key is keyed.
        await connection.execute(
            insert(AuditChainHead).values(id=1, seq=0, hash=GENESIS, keyed_from=0)
        )
        return GENESIS
    head = await connection.execute(select(AuditChainHead.hash).where(AuditChainHead.id == 1))
    return str(head.scalar_one())


async def append(
    engine: AsyncEngine, record: AuditFields, chain_hash: Callable[[str], str]
) -> AuditEntry:
    """Append `record`, in its own transaction, with the hash `chain_hash` gives for
    the newest record's hash; return it as stored."""
    values = {field.name: getattr(record, field.name) for field in fields(AuditFields)}
    async with engine.begin() as connection:
        values["hash"] = chain_hash(await _lock_head(connection))
        inserted = await connection.execute(
            insert(AuditRecord).values(**values).returning(AuditRecord.seq)
        )
        values["seq"] = inserted.scalar_one()
        await connection.execute(
            update(AuditChainHead)
            .where(AuditChainHead.id == 1)
            .values(seq=values["seq"], hash=values["hash"])
        )
    return _entry_of(values)


async def chain(engine: AsyncEngine) -> AsyncGenerator[tuple[AuditEntry, ChainHead | None], None]:
    """Every record, oldest first, each with the chain head (None without one).

    One statement reads the head with the records, so both come from one snapshot: a
    record appended meanwhile cannot look like one past the head. Close it
    (`contextlib.aclosing`) when leaving early."""
    head = select(AuditChainHead).where(AuditChainHead.id == 1).subquery()
    query = (
        select(
            AuditRecord.__table__,
            select(head.c.seq).scalar_subquery().label("head_seq"),
            select(head.c.hash).scalar_subquery().label("head_hash"),
            select(head.c.keyed_from).scalar_subquery().label("keyed_from"),
        )
        .order_by(AuditRecord.seq)
        .execution_options(yield_per=500)
    )
    async with engine.connect() as connection:
        result = await connection.stream(query)
        async for row in result.mappings():
            found = (
                None
                if row["head_seq"] is None
                else ChainHead(row["head_seq"], row["head_hash"], row["keyed_from"])
            )
            yield _entry_of(row), found


async def chain_head(engine: AsyncEngine) -> tuple[ChainHead | None, int]:
    """The chain head (None without one) and how many records there are, read together."""
    head = select(AuditChainHead).where(AuditChainHead.id == 1).subquery()
    async with engine.connect() as connection:
        found = (
            await connection.execute(
                select(head, select(func.count()).select_from(AuditRecord).scalar_subquery())
            )
        ).first()
    if found is None:
        return None, 0  # no head row, so no records read with it
    return ChainHead(found.seq, found.hash, found.keyed_from), int(found[-1])


def _filters(
    user_id: str | None,
    action: str | None,
    resource: str | None,
    since: datetime | None,
    until: datetime | None,
) -> list[Any]:
    conditions: list[Any] = []
    if user_id:
        conditions.append(AuditRecord.user_id == user_id)
    if action:
        conditions.append(AuditRecord.action == action)
    if resource:
        if resource.endswith("*"):
            prefix = resource[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            conditions.append(AuditRecord.resource.like(prefix + "%", escape="\\"))
        else:
            conditions.append(AuditRecord.resource == resource)
    if since is not None:
        conditions.append(AuditRecord.timestamp >= since)
    if until is not None:
        conditions.append(AuditRecord.timestamp <= until)
    return conditions


async def list_audit(
    engine: AsyncEngine,
    *,
    user_id: str | None = None,
    action: str | None = None,
    resource: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[AuditEntry], int]:
    """Matching records, newest first, and how many match in all. `resource` is exact,
    or a prefix when it ends in `*`."""
    conditions = _filters(user_id, action, resource, since, until)
    async with engine.connect() as connection:
        total = await connection.execute(
            select(func.count()).select_from(AuditRecord).where(*conditions)
        )
        rows = await connection.execute(
            select(AuditRecord.__table__)
            .where(*conditions)
            .order_by(AuditRecord.seq.desc())
            .limit(limit)
            .offset(offset)
        )
        return [_entry_of(row) for row in rows.mappings()], int(total.scalar_one())
