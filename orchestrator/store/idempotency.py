"""`Idempotency-Key`s: the first answer to a POST, kept for its retries.

The API's middleware (`orchestrator/api/idempotency.py`) records a key as pending before
its request runs (`claim`), then keeps the answer (`keep`) or forgets the key (`forget`:
the request failed, a retry may run it again). A key is kept `ttl` seconds; one left
pending, by a process that died while the request ran, only `pending_ttl` seconds, after
which a retry runs the request again instead of being told it still runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import msgspec
from sqlalchemy import ColumnElement, and_, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.clock import utcnow
from orchestrator.store.models import IdempotentRequest


@dataclass(frozen=True, slots=True)
class RequestKey:
    """One client's key for one request."""

    #: Whose key it is (a digest of the credential): one client's keys never answer
    #: another's requests.
    scope: str
    key: str
    #: A digest of the request (its path and body): the same key for another request
    #: is refused.
    request_hash: str


class Answer(msgspec.Struct, frozen=True):
    """A kept answer, replayed as it was (headers as latin-1 text)."""

    status_code: int
    headers: list[tuple[str, str]]
    body: str


class Held(msgspec.Struct, frozen=True):
    """A key recorded before: by which request, and its answer (None: still running)."""

    request_hash: str
    answer: Answer | None


class IdempotencyKeys:
    """The keys of one database; `clock` says what time it is (tests move it)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        ttl: float,
        pending_ttl: float,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._engine = engine
        self.ttl = timedelta(seconds=ttl)
        self.pending_ttl = timedelta(seconds=pending_ttl)
        self.clock = clock

    async def claim(self, request: RequestKey) -> tuple[datetime, Held | None]:
        """Record the key as pending, as of now (returned: `keep` and `forget` name the
        claim by it), or say who holds it (then nothing is recorded)."""
        now = self.clock()
        table = IdempotentRequest
        expired = or_(
            table.created_at < now - self.ttl,
            and_(table.state == "pending", table.created_at < now - self.pending_ttl),
        )
        async with self._engine.begin() as connection:
            await connection.execute(delete(table).where(expired))
            try:
                async with connection.begin_nested():
                    await connection.execute(
                        insert(table),
                        [
                            {
                                "scope": request.scope,
                                "key": request.key,
                                "request_hash": request.request_hash,
                                "state": "pending",
                                "created_at": now,
                            }
                        ],
                    )
                return now, None
            except IntegrityError:
                row = (
                    (
                        await connection.execute(
                            select(table.__table__).where(
                                table.scope == request.scope, table.key == request.key
                            )
                        )
                    )
                    .mappings()
                    .one()
                )
        answer = None
        if row["state"] != "pending":
            headers = [(str(k), str(v)) for k, v in row["headers"]]
            answer = Answer(row["status_code"], headers, row["body"])
        return now, Held(row["request_hash"], answer)

    async def keep(self, request: RequestKey, claimed_at: datetime, answer: Answer) -> None:
        """Keep the answer of the request that claimed the key at `claimed_at` (if the
        claim lapsed and a retry holds the key now, the retry's answer is kept)."""
        async with self._engine.begin() as connection:
            await connection.execute(
                update(IdempotentRequest)
                .where(self._claim(request, claimed_at))
                .values(
                    state="done",
                    status_code=answer.status_code,
                    headers=[list(pair) for pair in answer.headers],
                    body=answer.body,
                )
            )

    async def forget(self, request: RequestKey, claimed_at: datetime) -> None:
        """Drop the claim: a retry runs the request again."""
        async with self._engine.begin() as connection:
            await connection.execute(
                delete(IdempotentRequest).where(self._claim(request, claimed_at))
            )

    @staticmethod
    def _claim(request: RequestKey, claimed_at: datetime) -> ColumnElement[bool]:
        return and_(
            IdempotentRequest.scope == request.scope,
            IdempotentRequest.key == request.key,
            IdempotentRequest.created_at == claimed_at,
        )
