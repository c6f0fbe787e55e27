"""Idempotency-Keys in the store: kept answers, and keys a crash left pending, which
block retries for `pending_ttl` only. The clock is the test's: nothing sleeps."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.settings import load_settings
from orchestrator.store.engine import create_engine, ensure_schema
from orchestrator.store.idempotency import Answer, Held, IdempotencyKeys, RequestKey
from tests.backend import settings_env

TTL = 24 * 3600.0
PENDING_TTL = 60.0


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def keys(tmp_path, clock: Clock) -> AsyncIterator[IdempotencyKeys]:
    settings = load_settings(environ=settings_env(tmp_path))
    engine = create_engine(settings)
    try:
        await ensure_schema(engine, settings)
        yield IdempotencyKeys(engine, ttl=TTL, pending_ttl=PENDING_TTL, clock=clock)
    finally:
        await engine.dispose()


REQUEST = RequestKey(scope="a" * 64, key="key-1", request_hash="h" * 64)
ANSWER = Answer(202, [("content-type", "application/json")], '{"data": "wf-1"}')


async def test_a_key_left_pending_by_a_crash_stops_blocking_retries_after_its_ttl(
    keys: IdempotencyKeys, clock: Clock
) -> None:
    _, held = await keys.claim(REQUEST)
    assert held is None  # the first request runs, and its process dies: never finished
    clock.advance(PENDING_TTL - 1)
    _, held = await keys.claim(REQUEST)
    assert held == Held(REQUEST.request_hash, None)  # 409: still running, as far as known
    clock.advance(2)
    claimed_at, held = await keys.claim(REQUEST)
    assert held is None  # the retry runs
    assert claimed_at == clock.now
    _, held = await keys.claim(REQUEST)
    assert held == Held(REQUEST.request_hash, None)  # and holds the key in its turn


async def test_a_kept_answer_is_replayed_for_the_whole_ttl_then_forgotten(
    keys: IdempotencyKeys, clock: Clock
) -> None:
    claimed_at, _ = await keys.claim(REQUEST)
    await keys.keep(REQUEST, claimed_at, ANSWER)
    clock.advance(TTL - 1)
    _, held = await keys.claim(REQUEST)
    assert held == Held(REQUEST.request_hash, ANSWER)
    clock.advance(2)
    _, held = await keys.claim(REQUEST)
    assert held is None


async def test_a_request_whose_claim_lapsed_does_not_answer_for_the_retry(
    keys: IdempotencyKeys, clock: Clock
) -> None:
    first, _ = await keys.claim(REQUEST)
    clock.advance(PENDING_TTL + 1)
    retry, held = await keys.claim(REQUEST)
    assert held is None
    await keys.keep(REQUEST, first, Answer(202, [], "the first's"))  # too late
    await keys.forget(REQUEST, first)  # nor may it free the retry's key
    _, held = await keys.claim(REQUEST)
    assert held == Held(REQUEST.request_hash, None)
    await keys.keep(REQUEST, retry, ANSWER)
    _, held = await keys.claim(REQUEST)
    assert held == Held(REQUEST.request_hash, ANSWER)


async def test_a_forgotten_key_lets_a_retry_run_and_keys_are_per_scope(
    keys: IdempotencyKeys,
) -> None:
    claimed_at, _ = await keys.claim(REQUEST)
    other = RequestKey(scope="b" * 64, key=REQUEST.key, request_hash="x" * 64)
    _, held = await keys.claim(other)
    assert held is None  # another client's key of the same name
    await keys.forget(REQUEST, claimed_at)
    _, held = await keys.claim(REQUEST)
    assert held is None
