"""The audit log: append-only records, each chained to the one before by a keyed hash.

`hash = HMAC-SHA256(audit key, previous hash + canonical JSON of the record)`, where the
canonical JSON has sorted keys, no spaces and the timestamp as
`YYYY-MM-DDTHH:MM:SS.ffffffZ`, and the audit key is derived from the secrets key
(`control_center.secret_keys`), which is kept outside the database. Records written
before the chain had a key (seq below the head's `keyed_from`) are plain
`sha256(previous hash + canonical JSON)`; `verify_chain` checks them that way and counts
them as unkeyed.

Writers are serialized so the chain cannot fork (`control_center.store.audit.append`).

What the chain proves, and what it does not, is in docs/security.md ("Audit").
"""

from __future__ import annotations

import hashlib
import hmac
import json
from contextlib import aclosing
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from control_center.store import audit as store
from control_center.store.records import AuditEntry, AuditFields, ChainHead
from control_center.tokens import utcnow
from orchestrator.ids import new_id
from orchestrator.store.engine import AsyncEngine

RESULTS = ("success", "denied", "failure", "error")
#: `broken_at` when the fault is the chain head itself rather than a record.
HEAD = "audit_chain_head"


def _timestamp(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_json(record: AuditFields) -> str:
    """The bytes a record's hash covers: every field except `seq` and `hash`."""
    body = {
        "id": record.id,
        "timestamp": _timestamp(record.timestamp),
        "user_id": record.user_id,
        "action": record.action,
        "resource": record.resource,
        "result": record.result,
        "details": record.details,
        "ip": record.ip,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(previous: str, record: AuditFields, key: bytes | None) -> str:
    """The record's hash: HMAC-SHA256 with `key`; with None, the plain SHA-256 of the
    records written before the chain was keyed."""
    message = (previous + canonical_json(record)).encode("utf-8")
    if key is None:
        return hashlib.sha256(message).hexdigest()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


async def record_audit(
    engine: AsyncEngine,
    *,
    key: bytes,
    action: str,
    resource: str,
    result: str,
    user_id: str | None = None,
    details: dict[str, Any] | None = None,
    ip: str | None = None,
) -> AuditEntry:
    """Append one record (in its own transaction), its hash keyed with `key` (the
    `audit` key of `secret_keys.keys_for`), and return it with its hash.

    `details` must hold JSON values and no secrets: it is stored and shown as given.
    """
    if result not in RESULTS:
        raise ValueError(f"result must be one of {RESULTS}, not {result!r}")
    record = AuditFields(
        id=new_id(),
        timestamp=utcnow(),
        user_id=user_id,
        action=action[:100],
        resource=resource[:300],
        result=result,
        # Stored as it will be read back, so the hash covers exactly the stored value.
        details=json.loads(json.dumps(details or {}, default=str)),
        ip=ip,
    )
    return await store.append(engine, record, lambda previous: chain_hash(previous, record, key))


@dataclass(frozen=True, slots=True)
class ChainCheck:
    """What `verify_chain` found."""

    verified: bool
    #: Records checked: those up to the chain head.
    records: int
    #: Of which written before the chain was keyed (checked without the key).
    unkeyed: int
    #: The first seq whose hash is keyed; None without a chain head.
    keyed_from: int | None
    #: The chain head: record it outside the database, compare later (`expect_head`).
    head_seq: int | None
    head_hash: str | None
    #: The first record at fault, or `HEAD` when it is the chain head.
    broken_at: str | None = None
    broken_seq: int | None = None
    reason: str | None = None


class _Broken(Exception):
    def __init__(self, at: str, seq: int | None, reason: str) -> None:
        super().__init__(reason)
        self.at, self.seq, self.reason = at, seq, reason


async def verify_chain(
    engine: AsyncEngine, key: bytes, expect_head: tuple[int, str] | None = None
) -> ChainCheck:
    """Check every record against its predecessor and the head, with `key`.

    A record that was edited, inserted or deleted breaks its own link or its
    successor's; a record past the head, or a head that no longer matches the last
    record (records cut from the end and the head left), is named too. Records cut
    from the end *with* the head moved back leave a consistent, shorter chain: only a
    head recorded outside the database notices, given as `expect_head` (seq, hash):
    the record at that seq must still exist with that hash.
    """
    walk = _Walk(key, expect_head)
    try:
        async with aclosing(store.chain(engine)) as records:
            async for record, head in records:
                walk.step(record, head)
        if walk.last is None:  # no record: the head is all there is
            head, count = await store.chain_head(engine)
            if count:
                # The first records were written since the empty snapshot: check them.
                return await verify_chain(engine, key, expect_head)
            walk.head = head
        walk.end()
    except _Broken as broken:
        return walk.report(broken)
    return walk.report(None)


class _Walk:
    """The state of `verify_chain` between records."""

    def __init__(self, key: bytes, expect_head: tuple[int, str] | None) -> None:
        self.key, self.expect_head = key, expect_head
        self.previous, self.records, self.unkeyed = store.GENESIS, 0, 0
        self.last: AuditEntry | None = None
        self.head: ChainHead | None = None
        self.anchor_seen = False

    def step(self, record: AuditEntry, head: ChainHead | None) -> None:
        if self.last is None and head is not None:
            self.head = head
        seq, at = record.seq, record.id
        if self.head is None:
            raise _Broken(at, seq, "the chain head is missing")
        if seq > self.head.seq:
            raise _Broken(at, seq, "past the chain head: not written by the audit writer")
        keyed = seq >= self.head.keyed_from
        if chain_hash(self.previous, record, self.key if keyed else None) != record.hash:
            raise _Broken(at, seq, "its hash does not follow from the record before it")
        if self.expect_head is not None and seq == self.expect_head[0]:
            if record.hash != self.expect_head[1]:
                raise _Broken(
                    at, seq, "not the head recorded elsewhere: the chain was rewritten since"
                )
            self.anchor_seen = True
        self.previous, self.last = record.hash, record
        self.records += 1
        self.unkeyed += not keyed

    def end(self) -> None:
        last = self.last
        if self.head is not None and (
            self.previous != self.head.hash or (last is not None and last.seq != self.head.seq)
        ):
            raise _Broken(
                last.id if last is not None else HEAD,
                last.seq if last is not None else None,
                "the chain head no longer matches: records were removed from the end",
            )
        if self.expect_head is not None and not self.anchor_seen:
            ends = "no record" if last is None else f"seq {last.seq}"
            raise _Broken(
                HEAD,
                None,
                f"the chain ends at {ends}, before the head recorded elsewhere "
                f"(seq {self.expect_head[0]}): records were removed from the end",
            )

    def report(self, broken: _Broken | None) -> ChainCheck:
        head = self.head
        return ChainCheck(
            verified=broken is None,
            records=self.records,
            unkeyed=self.unkeyed,
            keyed_from=head.keyed_from if head else None,
            head_seq=head.seq if head else None,
            head_hash=head.hash if head else None,
            broken_at=broken.at if broken else None,
            broken_seq=broken.seq if broken else None,
            reason=broken.reason if broken else None,
        )
