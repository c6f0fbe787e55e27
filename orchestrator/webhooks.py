"""Webhooks (seed 003): signed deliveries of log events from a persisted outbox.

An outbox row is written in the transaction of the event it carries, one per matching
endpoint, so no event is lost on a crash. `WebhookDispatcher` claims due rows, posts
them, retries with exponential backoff, and gives up (status `dead`) after
`max_attempts`. A claim moves a row's `next_attempt_at` past the time its post may take
(`claim_due`, with `SKIP LOCKED` on PostgreSQL): another `serve` on the same database
leaves it alone meanwhile, and it is due again if the claimant dies. A row is marked
delivered right after the receiver's 2xx: a crash in between sends it again, with the
same `X-Webhook-Id`, which receivers use to drop duplicates.

Signing: the body is `{event, timestamp, data, signature}`, where `signature` is
`"sha256=" + HMAC-SHA256(secret, canonical)` and `canonical` is the body without
`signature`, as `json.dumps(..., sort_keys=True, separators=(",", ":"),
ensure_ascii=False)`. The `X-Signature-256` header signs `"{timestamp}.{canonical}"`
with `X-Webhook-Timestamp: {timestamp}`, so a receiver can refuse replays of old
deliveries. `examples/webhook_receiver.py` verifies both.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import structlog
from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.ids import new_id
from orchestrator.metrics import Metrics
from orchestrator.settings import WebhookSettings
from orchestrator.store.models import WebhookDelivery

log = structlog.get_logger(__name__)

EVENT_NAMES = (
    "task.started",
    "task.retrying",
    "task.completed",
    "task.failed",
    "task.cancelled",
    "workflow.submitted",
    "workflow.running",
    "workflow.completed",
    "workflow.failed",
    "workflow.cancelled",
    "workflow.rolling_back",
    "workflow.rolled_back",
    "batch.completed",
    "batch.failed",
    "batch.cancelled",
    "batch.rolled_back",
    "rollback.started",
    "checkpoint.created",
    "state.restored",
)
_SNAKE = {"RollingBack": "rolling_back", "RolledBack": "rolled_back"}


def webhook_event(event: dict[str, Any]) -> str | None:
    """The webhook name of a log event (`TaskStatusChanged` Completed -> `task.completed`)."""
    kind, data = event["type"], event["data"]
    status = str(data.get("status", ""))
    word = _SNAKE.get(status, status.lower())
    if kind == "TaskStatusChanged":
        if data.get("retrying"):
            return "task.retrying"
        return "task.started" if status == "Running" else f"task.{word}"
    if kind == "WorkflowStatusChanged":
        return f"workflow.{word}"
    if kind == "BatchStatusChanged":
        return f"batch.{word}"
    return {
        "WorkflowSubmitted": "workflow.submitted",
        "RollbackStarted": "rollback.started",
        "CheckpointCreated": "checkpoint.created",
        "StateRestored": "state.restored",
    }.get(kind)


def canonical(payload: dict[str, Any]) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def signature(secret: str, message: str) -> str:
    digest = hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class Outbox:
    """Turns committed events into delivery rows for the endpoints that want them."""

    def __init__(self, settings: WebhookSettings) -> None:
        self.endpoints = settings.endpoints if settings.enabled else []

    def __bool__(self) -> bool:
        return bool(self.endpoints)

    def rows(self, events: Sequence[dict[str, Any]], seqs: Sequence[int]) -> list[dict[str, Any]]:
        rows = []
        for event, seq in zip(events, seqs, strict=True):
            name = webhook_event(event)
            if name is None:
                continue
            for endpoint in self.endpoints:
                if name not in endpoint.events and "*" not in endpoint.events:
                    continue
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
        rows = self.rows(events, seqs)
        if rows:
            connection.execute(insert(WebhookDelivery), rows)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class WebhookDispatcher:
    """Posts due deliveries; woken by new events, and by its own timer for retries."""

    def __init__(self, engine: AsyncEngine, settings: WebhookSettings, metrics: Metrics) -> None:
        self.engine = engine
        self.settings = settings
        self.metrics = metrics
        self.secrets = {e.url: e.secret for e in settings.endpoints}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.settings.enabled and self.settings.endpoints:
            self._task = asyncio.create_task(self._run(), name="webhook-dispatcher")

    def notify(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=self.settings.timeout) as http:
            while True:
                self._wake.clear()
                due: list[dict[str, Any]] = []
                next_at: float | None = None
                try:
                    due, next_at = await self.claim_due()
                    await asyncio.gather(*(self._deliver(http, row) for row in due))
                except Exception:
                    log.exception("webhook dispatch failed")
                    next_at = time.time() + 1
                if due:
                    continue
                wait = 5.0 if next_at is None else max(0.0, next_at - time.time())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), min(wait, 5.0))

    async def claim_due(self) -> tuple[list[dict[str, Any]], float | None]:
        """Claim the deliveries due now (50 at most) for as long as posting them may take,
        and say when the next one falls due (epoch seconds; None: nothing pending)."""
        now = datetime.now(UTC)
        # (Each post gets `timeout`; the rest is room for recording how it went.)
        lease = timedelta(seconds=max(3 * self.settings.timeout, 1.0))
        async with self.engine.begin() as connection:
            picked = (
                select(WebhookDelivery.id)
                .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)
                .order_by(WebhookDelivery.event_seq)
                .limit(50)
            )
            if connection.dialect.name == "postgresql":  # (SQLite has one writer at a time)
                picked = picked.with_for_update(skip_locked=True)
            # One statement, which writes from the start: a read then a write in one
            # SQLite transaction fails when the journal commits in between.
            claimed = await connection.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id.in_(picked.scalar_subquery()))
                .values(next_attempt_at=now + lease)
                .returning(*WebhookDelivery.__table__.c)
            )
            due = sorted((dict(r) for r in claimed.mappings()), key=lambda r: r["event_seq"])
            upcoming = (
                await connection.execute(
                    select(func.min(WebhookDelivery.next_attempt_at)).where(
                        WebhookDelivery.status == "pending"
                    )
                )
            ).scalar()
        return due, None if upcoming is None else upcoming.timestamp()

    async def _deliver(self, http: httpx.AsyncClient, row: dict[str, Any]) -> None:
        secret = self.secrets.get(row["url"])
        attempts = row["attempts"] + 1
        values: dict[str, Any] = {"attempts": attempts}
        if secret is None:
            values.update(status="dead", last_error="the endpoint is no longer configured")
        else:
            body, headers = self.signed(row, secret)
            try:
                response = await http.post(row["url"], content=body, headers=headers)
                values["last_status_code"] = response.status_code
                ok = 200 <= response.status_code < 300
                error = None if ok else f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                ok, error = False, f"{type(exc).__name__}: {exc}"
            if ok:
                values.update(status="delivered", delivered_at=datetime.now(UTC), last_error=None)
            elif attempts >= self.settings.max_attempts:
                values.update(status="dead", last_error=error)
            else:
                delay = min(
                    self.settings.max_delay, self.settings.initial_delay * 2 ** (attempts - 1)
                ) * random.uniform(0.9, 1.1)
                values.update(
                    last_error=error, next_attempt_at=datetime.now(UTC) + timedelta(seconds=delay)
                )
        self.metrics.webhook_deliveries.labels(values.get("status", "retry")).inc()
        async with self.engine.begin() as connection:
            await connection.execute(
                update(WebhookDelivery).where(WebhookDelivery.id == row["id"]).values(**values)
            )

    @staticmethod
    def signed(row: dict[str, Any], secret: str) -> tuple[bytes, dict[str, str]]:
        payload = dict(row["payload"])
        text = canonical(payload)
        stamp = str(int(time.time()))
        body = canonical({**payload, "signature": signature(secret, text)})
        return body.encode(), {
            "Content-Type": "application/json",
            "X-Webhook-Id": row["id"],
            "X-Webhook-Event": row["event"],
            "X-Webhook-Timestamp": stamp,
            "X-Signature-256": signature(secret, f"{stamp}.{text}"),
            "User-Agent": "provisioning-webhooks/1",
        }


async def list_deliveries(
    engine: AsyncEngine, *, status: str | None, event: str | None, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
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
        return [dict(r) for r in rows.mappings()], int(total)
