"""The audit log: append-only records, each chained to the one before by its hash.

`hash = sha256(previous hash + canonical JSON of the record)`, where the canonical JSON
has sorted keys, no spaces and the timestamp as `YYYY-MM-DDTHH:MM:SS.ffffffZ`. Writers
are serialized so the chain cannot fork: each insert runs in one transaction that
first updates the one-row `audit_chain_head` (on PostgreSQL after taking
`pg_advisory_xact_lock`; on SQLite that first write takes the database's write lock,
as `BEGIN IMMEDIATE` would), then reads the previous hash, inserts, and moves the head.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from control_center.models import AuditChainHead, AuditRecord
from control_center.tokens import utcnow
from orchestrator.ids import new_id

#: Any constant: the key of the advisory lock audit writers take on PostgreSQL.
ADVISORY_LOCK_KEY = 0x70726F76  # "prov"
GENESIS = ""
RESULTS = ("success", "denied", "failure", "error")


def _timestamp(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_json(record: dict[str, Any]) -> str:
    """The bytes a record's hash covers: every field except `seq` and `hash`."""
    body = {
        "id": record["id"],
        "timestamp": _timestamp(record["timestamp"]),
        "user_id": record["user_id"],
        "action": record["action"],
        "resource": record["resource"],
        "result": record["result"],
        "details": record["details"],
        "ip": record["ip"],
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(previous: str, record: dict[str, Any]) -> str:
    return hashlib.sha256((previous + canonical_json(record)).encode("utf-8")).hexdigest()


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
        await connection.execute(insert(AuditChainHead).values(id=1, seq=0, hash=GENESIS))
        return GENESIS
    head = await connection.execute(select(AuditChainHead.hash).where(AuditChainHead.id == 1))
    return str(head.scalar_one())


async def record_audit(
    engine: AsyncEngine,
    *,
    action: str,
    resource: str,
    result: str,
    user_id: str | None = None,
    details: dict[str, Any] | None = None,
    ip: str | None = None,
) -> dict[str, Any]:
    """Append one record (in its own transaction) and return it with its hash.

    `details` must hold JSON values and no secrets: it is stored and shown as given.
    """
    if result not in RESULTS:
        raise ValueError(f"result must be one of {RESULTS}, not {result!r}")
    record: dict[str, Any] = {
        "id": new_id(),
        "timestamp": utcnow(),
        "user_id": user_id,
        "action": action[:100],
        "resource": resource[:300],
        "result": result,
        # Stored as it will be read back, so the hash covers exactly the stored value.
        "details": json.loads(json.dumps(details or {}, default=str)),
        "ip": ip,
    }
    async with engine.begin() as connection:
        previous = await _lock_head(connection)
        record["hash"] = chain_hash(previous, record)
        inserted = await connection.execute(
            insert(AuditRecord).values(**record).returning(AuditRecord.seq)
        )
        seq = inserted.scalar_one()
        await connection.execute(
            update(AuditChainHead)
            .where(AuditChainHead.id == 1)
            .values(seq=seq, hash=record["hash"])
        )
    return {**record, "seq": seq}


async def verify_chain(engine: AsyncEngine) -> str | None:
    """The id of the first record whose hash does not follow from its predecessor,
    or None when the whole chain holds.

    A record that was edited or deleted breaks its own link or its successor's. When
    records were removed from the end, the last remaining record is named, because the
    head no longer points at it; a record past the head (or any record when the head
    is missing) is named too.
    """
    async with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            # One snapshot for the head and the records: a record appended meanwhile
            # must not look like one forged past the head.
            await connection.execution_options(isolation_level="REPEATABLE READ")
        head = (
            await connection.execute(
                select(AuditChainHead.seq, AuditChainHead.hash).where(AuditChainHead.id == 1)
            )
        ).first()
        result = await connection.stream(
            select(AuditRecord.__table__).order_by(AuditRecord.seq).execution_options(yield_per=500)
        )
        previous = GENESIS
        last_id: str | None = None
        async for row in result.mappings():
            record = dict(row)
            if head is None or record["seq"] > head.seq:
                return str(record["id"])  # a record the head does not account for
            if chain_hash(previous, record) != record["hash"]:
                return str(record["id"])
            previous, last_id = record["hash"], str(record["id"])
        if head is not None and previous != head.hash:
            return last_id or "audit_chain_head"
    return None


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
) -> tuple[list[dict[str, Any]], int]:
    """Matching records, newest first, and how many match in all."""
    conditions = _filters(user_id, action, resource, since, until)
    async with engine.connect() as connection:
        total = (
            await connection.execute(
                select(func.count()).select_from(AuditRecord).where(*conditions)
            )
        ).scalar_one()
        rows = await connection.execute(
            select(AuditRecord.__table__)
            .where(*conditions)
            .order_by(AuditRecord.seq.desc())
            .limit(limit)
            .offset(offset)
        )
        return [dict(row) for row in rows.mappings()], int(total)
