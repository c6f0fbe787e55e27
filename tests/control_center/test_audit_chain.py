"""The audit chain: concurrent writers, even in two processes' worth of engines, never
fork it; `verify_chain` names the first record that no longer follows. The chain is
keyed (HMAC), so whoever can write the database but lacks the key cannot rewrite a
record and the hashes after it; records cut from the end are noticed against a head
recorded elsewhere."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from control_center.audit import (
    canonical_json,
    chain_hash,
    record_audit,
    verify_chain,
)
from control_center.store.audit import list_audit
from control_center.store.models import AuditChainHead, AuditRecord
from orchestrator.settings import Settings
from orchestrator.store.engine import alembic_config, create_engine, ensure_schema
from tests import backend
from tests.backend import settings_fields
from tests.control_center.conftest import audit_fields


@pytest.fixture
async def engines(tmp_path: Path) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    settings = Settings(**settings_fields(tmp_path))
    first, second = create_engine(settings), create_engine(settings)
    await ensure_schema(first, settings)
    yield first, second
    await first.dispose()
    await second.dispose()


KEY = b"k" * 32


async def write(engine: AsyncEngine, n: int, who: str) -> None:
    await record_audit(
        engine,
        key=KEY,
        action="servers.create",
        resource=f"servers:{who}-{n}",
        result="success",
        user_id=who,
        details={"n": n, "note": "ünïcode ✓", "ratio": 0.1},
        ip="127.0.0.1",
    )


async def test_concurrent_writers_keep_one_chain(engines):
    first, second = engines
    await asyncio.gather(
        *(write(first, n, "a") for n in range(40)), *(write(second, n, "b") for n in range(40))
    )
    check = await verify_chain(first, KEY)
    assert check.broken_at is None and (check.records, check.unkeyed) == (80, 0)
    async with first.connect() as connection:
        rows = (await connection.execute(select(AuditRecord).order_by(AuditRecord.seq))).all()
    assert len(rows) == 80
    previous = ""
    for row in rows:  # one line: each record follows the one before it
        assert row.hash == chain_hash(previous, audit_fields(row._mapping), KEY)
        previous = row.hash
    assert (check.head_seq, check.head_hash) == (rows[-1].seq, rows[-1].hash)


async def test_an_edited_record_is_named(engines):
    engine, _ = engines
    for n in range(5):
        await write(engine, n, "a")
    records, _ = await list_audit(engine, limit=10)
    victim = records[2]  # newest first
    async with engine.begin() as connection:
        await connection.execute(
            update(AuditRecord).where(AuditRecord.id == victim.id).values(result="denied")
        )
    assert (await verify_chain(engine, KEY)).broken_at == victim.id


async def test_a_deleted_record_breaks_its_successor(engines):
    engine, _ = engines
    for n in range(5):
        await write(engine, n, "a")
    oldest_first = list(reversed((await list_audit(engine, limit=10))[0]))
    async with engine.begin() as connection:
        await connection.execute(delete(AuditRecord).where(AuditRecord.id == oldest_first[1].id))
    assert (await verify_chain(engine, KEY)).broken_at == oldest_first[2].id


async def test_records_cut_from_the_end_are_noticed(engines):
    engine, _ = engines
    for n in range(3):
        await write(engine, n, "a")
    oldest_first = list(reversed((await list_audit(engine, limit=10))[0]))
    async with engine.begin() as connection:
        await connection.execute(delete(AuditRecord).where(AuditRecord.id == oldest_first[2].id))
    assert (await verify_chain(engine, KEY)).broken_at == oldest_first[1].id


async def test_an_empty_log_verifies(engines):
    check = await verify_chain(engines[0], KEY)
    assert check.broken_at is None and check.records == 0 and check.head_seq is None


async def test_audit_filters(engines):
    engine, _ = engines
    for n in range(3):
        await write(engine, n, "a")
    await write(engine, 9, "b")
    rows, total = await list_audit(engine, user_id="a", limit=2)
    assert total == 3 and len(rows) == 2
    rows, total = await list_audit(engine, resource="servers:b-*")
    assert total == 1 and rows[0].resource == "servers:b-9"
    rows, total = await list_audit(engine, resource="servers:b_9")  # `_` is not a wildcard
    assert total == 0
    async with engine.connect() as connection:
        count = await connection.execute(select(func.count()).select_from(AuditRecord))
    assert count.scalar_one() == 4


async def test_a_record_forged_past_the_head_or_a_deleted_head_is_named(engines):
    engine, _ = engines
    for n in range(3):
        await write(engine, n, "alice")
    async with engine.begin() as connection:
        last = dict(
            (
                await connection.execute(
                    select(AuditRecord.__table__).order_by(AuditRecord.seq.desc()).limit(1)
                )
            )
            .mappings()
            .one()
        )
        forged = {**last, "seq": last["seq"] + 1, "id": "forged-id"}
        forged["hash"] = chain_hash(last["hash"], audit_fields(forged), KEY)
        await connection.execute(insert(AuditRecord), [forged])
    assert (await verify_chain(engine, KEY)).broken_at == "forged-id"
    async with engine.begin() as connection:
        await connection.execute(delete(AuditRecord).where(AuditRecord.id == "forged-id"))
    assert (await verify_chain(engine, KEY)).broken_at is None
    async with engine.begin() as connection:
        await connection.execute(delete(AuditChainHead))
        first = (
            await connection.execute(select(AuditRecord.id).order_by(AuditRecord.seq).limit(1))
        ).scalar_one()
    assert (await verify_chain(engine, KEY)).broken_at == first


async def oldest_first(engine: AsyncEngine) -> list[dict]:
    async with engine.connect() as connection:
        rows = await connection.execute(select(AuditRecord.__table__).order_by(AuditRecord.seq))
        return [dict(row) for row in rows.mappings()]


async def rechain(engine: AsyncEngine, records: list[dict], start: int, key: bytes | None) -> None:
    """What someone who can write the database does after editing `records[start]`:
    recompute its hash and every later one (with `key`; None: plain SHA-256, as the
    chain was before it had a key), and move the head."""
    previous = records[start - 1]["hash"] if start else ""
    async with engine.begin() as connection:
        for record in records[start:]:
            record["hash"] = chain_hash(previous, audit_fields(record), key)
            previous = record["hash"]
            await connection.execute(
                update(AuditRecord)
                .where(AuditRecord.seq == record["seq"])
                .values(result=record["result"], hash=record["hash"])
            )
        await connection.execute(
            update(AuditChainHead).values(seq=records[-1]["seq"], hash=records[-1]["hash"])
        )


async def test_a_record_rewritten_with_every_later_hash_and_the_head_is_named(engines):
    engine, _ = engines
    for n in range(5):
        await write(engine, n, "a")
    records = await oldest_first(engine)
    records[1]["result"] = "denied"
    await rechain(engine, records, 1, None)
    assert (await verify_chain(engine, KEY)).broken_at == records[1]["id"]
    await rechain(engine, records, 1, b"a guessed key, not the right one")
    assert (await verify_chain(engine, KEY)).broken_at == records[1]["id"]
    # Only the key's holder rewrites the chain unnoticed (what it proves nothing against).
    await rechain(engine, records, 1, KEY)
    assert (await verify_chain(engine, KEY)).broken_at is None


async def test_records_cut_from_the_end_are_noticed_against_a_head_recorded_elsewhere(engines):
    engine, _ = engines
    for n in range(5):
        await write(engine, n, "a")
    anchor = await verify_chain(engine, KEY)
    assert anchor.head_seq is not None and anchor.head_hash is not None
    records = await oldest_first(engine)
    kept = records[:3]
    async with engine.begin() as connection:  # the last two go, and the head moves back
        await connection.execute(delete(AuditRecord).where(AuditRecord.seq > kept[-1]["seq"]))
        await connection.execute(
            update(AuditChainHead).values(seq=kept[-1]["seq"], hash=kept[-1]["hash"])
        )
    # From inside the database alone, a shorter chain is a consistent chain.
    assert (await verify_chain(engine, KEY)).broken_at is None
    expected = (anchor.head_seq, anchor.head_hash)
    check = await verify_chain(engine, KEY, expect_head=expected)
    assert check.broken_at == "audit_chain_head"
    assert check.reason is not None and "removed from the end" in check.reason
    # A head recorded earlier still matches while the chain only grew since.
    await write(engine, 9, "a")
    early = (kept[1]["seq"], kept[1]["hash"])
    assert (await verify_chain(engine, KEY, expect_head=early)).broken_at is None
    wrong = (kept[1]["seq"], "0" * 64)
    check = await verify_chain(engine, KEY, expect_head=wrong)
    assert check.broken_at == kept[1]["id"] and "rewritten" in (check.reason or "")


async def test_records_from_before_the_chain_was_keyed_are_reported_unkeyed(tmp_path):
    """A database upgraded from a version whose chain had no key: its records stay
    checkable (plain SHA-256), are counted as unkeyed, and new records chain on."""
    url = backend.database_url(tmp_path)
    await asyncio.to_thread(command.upgrade, alembic_config(url), "0006")
    old = create_async_engine(url)
    try:
        previous = ""
        async with old.begin() as connection:
            # That version's head had no `keyed_from`.
            await connection.execute(
                text("INSERT INTO audit_chain_head (id, seq, hash) VALUES (1, 0, '')")
            )
            for n in range(3):
                record = {
                    "id": f"old-{n}",
                    "timestamp": datetime(2026, 1, 1, n, tzinfo=UTC),
                    "user_id": None,
                    "action": "users.create",
                    "resource": f"users:{n}",
                    "result": "success",
                    "details": {"n": n},
                    "ip": None,
                }
                record["hash"] = hashlib.sha256(
                    (previous + canonical_json(audit_fields(record))).encode()
                ).hexdigest()
                previous = record["hash"]
                seq = (
                    await connection.execute(
                        insert(AuditRecord).values(**record).returning(AuditRecord.seq)
                    )
                ).scalar_one()
                await connection.execute(update(AuditChainHead).values(seq=seq, hash=previous))
    finally:
        await old.dispose()
    await asyncio.to_thread(command.upgrade, alembic_config(url), "head")
    engine = create_async_engine(url)
    try:
        for n in range(2):
            await write(engine, n, "new")
        check = await verify_chain(engine, KEY)
        assert check.broken_at is None
        assert (check.records, check.unkeyed) == (5, 3)
        assert check.keyed_from == seq + 1
        # An old record is still protected against an edit that keeps the rest.
        async with engine.begin() as connection:
            await connection.execute(
                update(AuditRecord).where(AuditRecord.id == "old-1").values(result="denied")
            )
        assert (await verify_chain(engine, KEY)).broken_at == "old-1"
    finally:
        await engine.dispose()
