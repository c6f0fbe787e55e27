"""The audit chain: concurrent writers, even in two processes' worth of engines, never
fork it; `verify_chain` names the first record that no longer follows."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from control_center.audit import chain_hash, list_audit, record_audit, verify_chain
from control_center.models import AuditRecord
from orchestrator.settings import Settings
from orchestrator.store.engine import create_engine, ensure_schema
from tests.backend import settings_fields


@pytest.fixture
async def engines(tmp_path: Path) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    settings = Settings(**settings_fields(tmp_path))
    first, second = create_engine(settings), create_engine(settings)
    await ensure_schema(first, settings)
    yield first, second
    await first.dispose()
    await second.dispose()


async def write(engine: AsyncEngine, n: int, who: str) -> None:
    await record_audit(
        engine,
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
    assert await verify_chain(first) is None
    async with first.connect() as connection:
        rows = (await connection.execute(select(AuditRecord).order_by(AuditRecord.seq))).all()
    assert len(rows) == 80
    previous = ""
    for row in rows:  # one line: each record follows the one before it
        assert row.hash == chain_hash(previous, dict(row._mapping))
        previous = row.hash


async def test_an_edited_record_is_named(engines):
    engine, _ = engines
    for n in range(5):
        await write(engine, n, "a")
    records, _ = await list_audit(engine, limit=10)
    victim = records[2]  # newest first
    async with engine.begin() as connection:
        await connection.execute(
            update(AuditRecord).where(AuditRecord.id == victim["id"]).values(result="denied")
        )
    assert await verify_chain(engine) == victim["id"]


async def test_a_deleted_record_breaks_its_successor(engines):
    engine, _ = engines
    for n in range(5):
        await write(engine, n, "a")
    oldest_first = list(reversed((await list_audit(engine, limit=10))[0]))
    async with engine.begin() as connection:
        await connection.execute(delete(AuditRecord).where(AuditRecord.id == oldest_first[1]["id"]))
    assert await verify_chain(engine) == oldest_first[2]["id"]


async def test_records_cut_from_the_end_are_noticed(engines):
    engine, _ = engines
    for n in range(3):
        await write(engine, n, "a")
    oldest_first = list(reversed((await list_audit(engine, limit=10))[0]))
    async with engine.begin() as connection:
        await connection.execute(delete(AuditRecord).where(AuditRecord.id == oldest_first[2]["id"]))
    assert await verify_chain(engine) == oldest_first[1]["id"]


async def test_an_empty_log_verifies(engines):
    assert await verify_chain(engines[0]) is None


async def test_audit_filters(engines):
    engine, _ = engines
    for n in range(3):
        await write(engine, n, "a")
    await write(engine, 9, "b")
    rows, total = await list_audit(engine, user_id="a", limit=2)
    assert total == 3 and len(rows) == 2
    rows, total = await list_audit(engine, resource="servers:b-*")
    assert total == 1 and rows[0]["resource"] == "servers:b-9"
    rows, total = await list_audit(engine, resource="servers:b_9")  # `_` is not a wildcard
    assert total == 0
    async with engine.connect() as connection:
        count = await connection.execute(select(func.count()).select_from(AuditRecord))
    assert count.scalar_one() == 4


async def test_a_record_forged_past_the_head_or_a_deleted_head_is_named(engines):
    from sqlalchemy import insert

    from control_center.models import AuditChainHead

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
        forged["hash"] = chain_hash(last["hash"], forged)
        await connection.execute(insert(AuditRecord), [forged])
    assert await verify_chain(engine) == "forged-id"
    async with engine.begin() as connection:
        await connection.execute(delete(AuditRecord).where(AuditRecord.id == "forged-id"))
    assert await verify_chain(engine) is None
    async with engine.begin() as connection:
        await connection.execute(delete(AuditChainHead))
        first = (
            await connection.execute(select(AuditRecord.id).order_by(AuditRecord.seq).limit(1))
        ).scalar_one()
    assert await verify_chain(engine) == first
