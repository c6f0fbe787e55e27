"""The webhook outbox: delivery rows written with the events they carry, claimed by the
dispatcher (`orchestrator/webhooks.py`), and listed by the API.

A row is written in the transaction of its event (`Outbox.write`, called by
`journal.write_events`), one per endpoint that wants the event, so no event is lost on a
crash. `claim_due` moves a due row's `next_attempt_at` past the time its post may take
(with `SKIP LOCKED` on PostgreSQL): another dispatcher on the same database leaves it
alone meanwhile, and it is due again if the claimant dies.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import msgspec
from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.event_names import webhook_events
from orchestrator.ids import new_id
from orchestrator.store.models import WebhookDelivery

DeliveryStatus = Literal["pending", "delivered", "dead"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where deliveries go, and which events (webhook names, or `*`) it wants."""

    url: str
    events: frozenset[str]

    def wants(self, name: str) -> bool:
        return name in self.events or "*" in self.events


class Outbox:
    """Turns committed events into delivery rows for the endpoints that want them."""

    def __init__(self, endpoints: Iterable[Endpoint] = ()) -> None:
        self.endpoints = list(endpoints)

    def __bool__(self) -> bool:
        return bool(self.endpoints)

    def rows(self, events: Sequence[dict[str, Any]], seqs: Sequence[int]) -> list[dict[str, Any]]:
        rows = []
        for event, seq in zip(events, seqs, strict=True):
            for name in webhook_events(event["type"], event["data"]):
                rows += self._rows(event, seq, name)
        return rows

    def _rows(self, event: dict[str, Any], seq: int, name: str) -> list[dict[str, Any]]:
        rows = []
        for endpoint in self.endpoints:
            if endpoint.wants(name):
                rows.append(
                    {
                        "id": new_id(),
                        "event_seq": seq,
                        "event": name,
                        "url": endpoint.url,
                        "payload": {
                            "event": name,
                            "timestamp": _iso(event["at"]),
                            "data": {**event["data"], "seq": seq},
                        },
                        "status": "pending",
                        "attempts": 0,
                        "next_attempt_at": event["at"],
                        "last_error": None,
                        "last_status_code": None,
                        "created_at": event["at"],
                        "delivered_at": None,
                    }
                )
        return rows

    def write(
        self, connection: Connection, events: Sequence[dict[str, Any]], seqs: Sequence[int]
    ) -> None:
        """Write the deliveries of `events` (whose log `seqs` are given), in the caller's
        transaction."""
        rows = self.rows(events, seqs)
        if rows:
            connection.execute(insert(WebhookDelivery), rows)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    """One delivery row: an event for one endpoint, and how its posts went."""

    id: str
    event_seq: int
    event: str
    url: str
    #: The signed body's content, but the signature: `{event, timestamp, data}`.
    payload: dict[str, Any]
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    last_status_code: int | None
    created_at: datetime
    delivered_at: datetime | None


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    """How one post of a delivery went, to record."""

    id: str
    #: Posts so far, this one included.
    attempts: int
    #: pending: to be posted again at `next_attempt_at`.
    status: DeliveryStatus
    last_error: str | None
    #: The receiver's answer; None: none came (the last one's is kept).
    last_status_code: int | None = None
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None


_COLUMNS = WebhookDelivery.__table__.c


async def claim_due(
    engine: AsyncEngine, *, now: datetime, lease: timedelta, limit: int = 50
) -> tuple[list[Delivery], datetime | None]:
    """Claim the deliveries due at `now` (`limit` at most, oldest events first) for
    `lease`, and say when the next pending one falls due (None: nothing pending)."""
    async with engine.begin() as connection:
        picked = (
            select(WebhookDelivery.id)
            .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)
            .order_by(WebhookDelivery.event_seq)
            .limit(limit)
        )
        if connection.dialect.name == "postgresql":  # (SQLite has one writer at a time)
            picked = picked.with_for_update(skip_locked=True)
        # One statement, which writes from the start: a read then a write in one
        # SQLite transaction fails when the journal commits in between.
        claimed = await connection.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_(picked.scalar_subquery()))
            .values(next_attempt_at=now + lease)
            .returning(*_COLUMNS)
        )
        due = sorted((Delivery(**r) for r in claimed.mappings()), key=lambda d: d.event_seq)
        upcoming = (
            await connection.execute(
                select(func.min(WebhookDelivery.next_attempt_at)).where(
                    WebhookDelivery.status == "pending"
                )
            )
        ).scalar()
    return due, upcoming


async def record_attempt(engine: AsyncEngine, attempt: DeliveryAttempt) -> None:
    values: dict[str, Any] = {
        "attempts": attempt.attempts,
        "status": attempt.status,
        "last_error": attempt.last_error,
    }
    if attempt.last_status_code is not None:
        values["last_status_code"] = attempt.last_status_code
    if attempt.next_attempt_at is not None:
        values["next_attempt_at"] = attempt.next_attempt_at
    if attempt.delivered_at is not None:
        values["delivered_at"] = attempt.delivered_at
    async with engine.begin() as connection:
        await connection.execute(
            update(WebhookDelivery).where(WebhookDelivery.id == attempt.id).values(**values)
        )


async def list_deliveries(
    engine: AsyncEngine,
    *,
    status: DeliveryStatus | None,
    event: str | None,
    limit: int,
    offset: int,
) -> tuple[list[Delivery], int]:
    """A page of deliveries, newest events first, and how many match in all."""
    conditions = []
    if status is not None:
        conditions.append(WebhookDelivery.status == status)
    if event is not None:
        conditions.append(WebhookDelivery.event == event)
    async with engine.connect() as connection:
        total = (
            await connection.execute(
                select(func.count()).select_from(WebhookDelivery).where(*conditions)
            )
        ).scalar_one()
        rows = await connection.execute(
            select(WebhookDelivery.__table__)
            .where(*conditions)
            .order_by(WebhookDelivery.event_seq.desc(), WebhookDelivery.url)
            .limit(limit)
            .offset(offset)
        )
        return [Delivery(**r) for r in rows.mappings()], int(total)
