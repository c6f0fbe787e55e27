"""Prometheus metrics of one orchestrator process (`GET /metrics`).

The executor reports what it does as it does it; gauges that mirror state (running and
queued tasks, workflows by status) are read when scraped. Each `Metrics` has its own
registry, so several orchestrators in one process (tests) do not mix their numbers.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

DURATION_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)
DELAY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)


class _WorkflowGauge(Collector):
    def __init__(self, counts: Tally[str]) -> None:
        self._counts = counts

    def collect(self) -> list[GaugeMetricFamily]:  # type: ignore[override]
        family = GaugeMetricFamily(
            "orchestrator_workflows", "Workflows by current status", labels=["status"]
        )
        for status, count in sorted(self._counts.items()):
            family.add_metric([status], count)
        return [family]


class _ReadCounter(Collector):
    """A counter kept elsewhere (a plain integer on a hot path), read when scraped."""

    def __init__(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        self._name = name
        self._documentation = documentation
        self._read = read

    def collect(self) -> list[CounterMetricFamily]:  # type: ignore[override]
        return [CounterMetricFamily(self._name, self._documentation, value=self._read())]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.tasks_total = Counter(
            "orchestrator_tasks", "Tasks that reached a terminal status", ["status"], registry=r
        )
        self.task_duration = Histogram(
            "orchestrator_task_duration_seconds",
            "Task execution duration (one attempt, provider call to result)",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.scheduling_delay = Histogram(
            "orchestrator_task_scheduling_delay_seconds",
            "From a task becoming ready to its provider call starting",
            buckets=DELAY_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "orchestrator_task_retries", "Failed attempts scheduled for a retry", registry=r
        )
        self.rollbacks = Counter(
            "orchestrator_rollbacks", "Rollbacks started (automatic or requested)", registry=r
        )
        self.commits = Counter(
            "orchestrator_journal_commits", "Transactions written by the journal", registry=r
        )
        self.http_requests = Counter(
            "orchestrator_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "orchestrator_http_request_duration_seconds",
            "HTTP request latency by route",
            ["method", "route"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.webhook_deliveries = Counter(
            "orchestrator_webhook_deliveries",
            "Webhook delivery attempts by result",
            ["result"],
            registry=r,
        )
        self.workflows: Tally[str] = Tally()
        r.register(_WorkflowGauge(self.workflows))
        ProcessCollector(registry=r)

    def watch(self, running: Callable[[], float], queued: Callable[[], float]) -> None:
        Gauge(
            "orchestrator_tasks_running", "Tasks running now", registry=self.registry
        ).set_function(running)
        Gauge(
            "orchestrator_tasks_queued",
            "Ready tasks waiting for a free slot",
            registry=self.registry,
        ).set_function(queued)

    def watch_database(self, round_trips: Callable[[], float], errors: Callable[[], float]) -> None:
        self.registry.register(
            _ReadCounter(
                "orchestrator_database_round_trips",
                "Requests sent to PostgreSQL and waited for (statements, BEGIN, COMMIT, "
                "ROLLBACK, first prepares)",
                round_trips,
            )
        )
        self.registry.register(
            _ReadCounter(
                "orchestrator_database_errors",
                "Calls of the executor to PostgreSQL that failed (each retry during an "
                "outage counts)",
                errors,
            )
        )

    def workflow_moved(self, old: str | None, new: str) -> None:
        if old is not None and self.workflows[old] > 0:
            self.workflows[old] -= 1
        self.workflows[new] += 1

    def render(self) -> bytes:
        return generate_latest(self.registry)
