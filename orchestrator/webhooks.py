"""Webhooks (seed 003): signed deliveries of log events from a persisted outbox.

The store's outbox (`orchestrator/store/outbox.py`) writes a delivery row in the
transaction of the event it carries, one per matching endpoint, so no event is lost on a
crash. `WebhookDispatcher` claims due rows, posts them, retries with exponential
backoff, and gives up (status `dead`) after `max_attempts`. A claim moves a row's
`next_attempt_at` past the time its post may take: another `serve` on the same
database leaves it alone meanwhile, and it is due again if the claimant dies. A row is
marked delivered right after the receiver's 2xx: a crash in between sends it again,
with the same `X-Webhook-Id`, which receivers use to drop duplicates.

A task event's `data` carries the task's `output` (as the reference API's example
shows), read when the delivery is posted: the event log keeps outputs out of every
event, and the task's row holds its latest output (null before there is any).

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
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec
import structlog

from orchestrator.deployment_events import TYPE as DEPLOYMENT_STATUS_CHANGED
from orchestrator.deployment_events import deployment_event
from orchestrator.metrics import Metrics
from orchestrator.settings import WebhookSettings
from orchestrator.store.engine import AsyncEngine
from orchestrator.store.outbox import Delivery, DeliveryAttempt, Endpoint, Outbox, record_attempt

if TYPE_CHECKING:
    import httpx
from orchestrator.store.outbox import claim_due as claim_due_deliveries
from orchestrator.store.workflows import get_task

log = structlog.get_logger(__name__)


def outbox_for(settings: WebhookSettings) -> Outbox:
    """The outbox of the configured endpoints (none while webhooks are disabled)."""
    if not settings.enabled:
        return Outbox()
    return Outbox(Endpoint(e.url, frozenset(e.events)) for e in settings.endpoints)


def canonical(payload: dict[str, Any]) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def signature(secret: str, message: str) -> str:
    digest = hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()
    return f"sha256={digest}"


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
        # The HTTP client is made for the first delivery: importing httpx is a twentieth
        # of the orchestrator's start-up, and most installations never post a webhook.
        http: httpx.AsyncClient | None = None
        try:
            while True:
                self._wake.clear()
                due: list[Delivery] = []
                next_at: float | None = None
                try:
                    due, next_at = await self.claim_due()
                    if due:
                        http = http or _client(self.settings.timeout)
                        await asyncio.gather(*(self._deliver(http, row) for row in due))
                except Exception:
                    log.exception("webhook dispatch failed")
                    next_at = time.time() + 1
                if due:
                    continue
                wait = 5.0 if next_at is None else max(0.0, next_at - time.time())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), min(wait, 5.0))
        finally:
            if http is not None:
                await http.aclose()

    async def claim_due(self) -> tuple[list[Delivery], float | None]:
        """Claim the deliveries due now (50 at most) for as long as posting them may take,
        and say when the next one falls due (epoch seconds; None: nothing pending)."""
        # (Each post gets `timeout`; the rest is room for recording how it went.)
        lease = timedelta(seconds=max(3 * self.settings.timeout, 1.0))
        due, upcoming = await claim_due_deliveries(self.engine, now=datetime.now(UTC), lease=lease)
        return due, None if upcoming is None else upcoming.timestamp()

    async def _deliver(self, http: httpx.AsyncClient, row: Delivery) -> None:
        secret = self.secrets.get(row.url)
        attempts = row.attempts + 1
        if secret is None:
            outcome = DeliveryAttempt(
                row.id, attempts, "dead", "the endpoint is no longer configured"
            )
        else:
            outcome = await self._post(http, await self._with_output(row), secret, attempts)
        label = "retry" if outcome.status == "pending" else outcome.status
        self.metrics.webhook_deliveries.labels(label).inc()
        await record_attempt(self.engine, outcome)

    async def _with_output(self, row: Delivery) -> Delivery:
        """A task event's delivery with the task's `output` in its `data`; a
        `deployment_status_changed` one in seed 002's shape (deployment_events.py)."""
        data = row.payload.get("data")
        if row.event == DEPLOYMENT_STATUS_CHANGED and isinstance(data, dict):
            event = await deployment_event(self.engine, data, str(row.payload.get("timestamp")))
            if event is None:
                return row
            return msgspec.structs.replace(
                row, payload={**row.payload, "data": {**event, "seq": data["seq"]}}
            )
        if not row.event.startswith("task.") or not isinstance(data, dict) or "output" in data:
            return row
        task_id = data.get("task_id")
        task = await get_task(self.engine, task_id) if isinstance(task_id, str) else None
        output = None if task is None else task.get("output")
        return msgspec.structs.replace(
            row, payload={**row.payload, "data": {**data, "output": output}}
        )

    async def _post(
        self, http: httpx.AsyncClient, row: Delivery, secret: str, attempts: int
    ) -> DeliveryAttempt:
        import httpx

        body, headers = self.signed(row, secret)
        code: int | None = None
        try:
            response = await http.post(row.url, content=body, headers=headers)
            code = response.status_code
            ok = 200 <= code < 300
            error = None if ok else f"HTTP {code}"
        except httpx.HTTPError as exc:
            ok, error = False, f"{type(exc).__name__}: {exc}"
        if ok:
            return DeliveryAttempt(
                row.id, attempts, "delivered", None, code, delivered_at=datetime.now(UTC)
            )
        if attempts >= self.settings.max_attempts:
            return DeliveryAttempt(row.id, attempts, "dead", error, code)
        delay = min(
            self.settings.max_delay, self.settings.initial_delay * 2 ** (attempts - 1)
        ) * random.uniform(0.9, 1.1)
        again = datetime.now(UTC) + timedelta(seconds=delay)
        return DeliveryAttempt(row.id, attempts, "pending", error, code, next_attempt_at=again)

    @staticmethod
    def signed(row: Delivery, secret: str) -> tuple[bytes, dict[str, str]]:
        payload = dict(row.payload)
        text = canonical(payload)
        stamp = str(int(time.time()))
        body = canonical({**payload, "signature": signature(secret, text)})
        return body.encode(), {
            "Content-Type": "application/json",
            "X-Webhook-Id": row.id,
            "X-Webhook-Event": row.event,
            "X-Webhook-Timestamp": stamp,
            "X-Signature-256": signature(secret, f"{stamp}.{text}"),
            "User-Agent": "provisioning-webhooks/1",
        }


def _client(timeout: float) -> httpx.AsyncClient:
    import httpx

    return httpx.AsyncClient(timeout=timeout)
