"""The orchestrator's tables, on the metadata both apps share (`orchestrator.store.base`),
created by Alembic migrations.

Task rows carry what a multi-worker claim needs (`status`, `not_before`, `lease_owner`,
`lease_expires_at`) so workers can later claim ready tasks with
`SELECT … FOR UPDATE SKIP LOCKED`; `pending_dependencies` is the in-degree counter the
scheduler decrements instead of rescanning the graph.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from orchestrator.store.base import Base, SequenceInt


class Workflow(Base):
    __tablename__ = "workflows"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), index=True)
    parallel_limit: Mapped[int] = mapped_column(Integer)
    rollback_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    check_mode: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Set by a cancel request: workers stop its running tasks and start no more.
    cancel_requested: Mapped[bool] = mapped_column(Boolean, server_default=false(), default=False)
    owner: Mapped[str | None] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]


#: The compensations `uq_tasks_compensation_in_flight` keeps unique per compensated task.
COMPENSATION_IN_FLIGHT = "compensates IS NOT NULL AND status IN ('Pending', 'Running')"


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_workflow_position", "workflow_id", "position"),
        Index("ix_tasks_status_not_before", "status", "not_before"),
        Index("ix_tasks_workflow_status", "workflow_id", "status"),
        # What a worker's claim scans: only the tasks ready to run.
        Index(
            "ix_tasks_ready",
            "workflow_id",
            "position",
            postgresql_where=text("status = 'Pending' AND pending_dependencies = 0"),
            sqlite_where=text("status = 'Pending' AND pending_dependencies = 0"),
        ),
        # At most one compensation of a task in flight, whichever process submits it
        # (migration 0008; `store/rollbacks.py` checks the completed ones).
        Index(
            "uq_tasks_compensation_in_flight",
            "compensates",
            unique=True,
            postgresql_where=text(COMPENSATION_IN_FLIGHT),
            sqlite_where=text(COMPENSATION_IN_FLIGHT),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(ForeignKey("workflows.id", ondelete="CASCADE"))
    operation_id: Mapped[str | None] = mapped_column(String(200))
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    command: Mapped[str] = mapped_column(Text)
    args: Mapped[list[Any]] = mapped_column(JSON)
    provider: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    pending_dependencies: Mapped[int] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    retry_initial_delay: Mapped[float] = mapped_column(Float)
    retry_max_delay: Mapped[float] = mapped_column(Float)
    timeout: Mapped[float | None] = mapped_column(Float)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    output: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: fail | continue | rollback: what a final failure of this task does to the workflow.
    on_failure: Mapped[str] = mapped_column(String(16), server_default="continue")
    #: The task this one undoes, and what that task's apply returned (for `compensate`).
    compensates: Mapped[str | None] = mapped_column(String(36), index=True)
    compensation: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    not_before: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None]
    #: What the provider needs to stop a leftover run (a process group id, …).
    handle: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]


class TaskDependency(Base):
    __tablename__ = "task_dependencies"

    task_id: Mapped[str] = mapped_column(
        ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    depends_on: Mapped[str] = mapped_column(
        ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    #: hard: run only after the dependency completed; soft: after it ended in any way.
    kind: Mapped[str] = mapped_column(String(8), server_default="hard")


class Event(Base):
    """One row of the append-only log, written in the transaction of the change it records."""

    __tablename__ = "events"

    seq: Mapped[int] = mapped_column(SequenceInt, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    type: Mapped[str] = mapped_column(String(64))
    workflow_id: Mapped[str | None] = mapped_column(String(36), index=True)
    task_id: Mapped[str | None] = mapped_column(String(36))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class Resource(Base):
    """An inventory row for something a provider created or changed."""

    __tablename__ = "resources"
    __table_args__ = (UniqueConstraint("provider", "kind", "name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    provider: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(32))
    workflow_id: Mapped[str | None] = mapped_column(String(36))
    task_id: Mapped[str | None] = mapped_column(String(36))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Checkpoint(Base):
    """A named moment: the event `seq` then, with the inventory and workflow states."""

    __tablename__ = "checkpoints"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    seq: Mapped[int] = mapped_column(SequenceInt)
    created_at: Mapped[datetime]
    inventory: Mapped[list[Any]] = mapped_column(JSON)
    workflows: Mapped[list[Any]] = mapped_column(JSON)
    size: Mapped[int] = mapped_column(Integer)


class WebhookDelivery(Base):
    """The outbox: one row per (event, endpoint), written with the event it carries."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    event_seq: Mapped[int] = mapped_column(SequenceInt)
    event: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: pending | delivered | dead
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    last_error: Mapped[str | None] = mapped_column(Text)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]


class IdempotentRequest(Base):
    """The first answer to a POST sent with an `Idempotency-Key`, replayed to retries."""

    __tablename__ = "idempotent_requests"

    #: sha256 of the credential, so one client's keys never answer another's requests
    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    #: pending while the first request runs, then done
    state: Mapped[str] = mapped_column(String(16))
    status_code: Mapped[int | None] = mapped_column(Integer)
    headers: Mapped[list[Any] | None] = mapped_column(JSON)
    body: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(index=True)
