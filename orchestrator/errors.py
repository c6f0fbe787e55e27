"""Domain errors. Each maps once, in `orchestrator.http.errors`, to a status and a code."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class DomainError(Exception):
    status_code = 400
    code = "INVALID_INPUT"

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidInput(DomainError):
    status_code = 422
    code = "INVALID_INPUT"


class CycleDetected(DomainError):
    status_code = 422
    code = "CYCLE_DETECTED"

    def __init__(self, cycle: Sequence[str]) -> None:
        super().__init__(
            f"the dependencies form a cycle: {' -> '.join(cycle)}", {"cycle": list(cycle)}
        )


class NotFound(DomainError):
    status_code = 404
    code = "NOT_FOUND"


class Conflict(DomainError):
    status_code = 409
    code = "CONFLICT"


class RollbackInProgress(Conflict):
    """Another rollback is undoing (or has just undone) some of the asked-for work."""

    code = "ROLLBACK_IN_PROGRESS"


class PermissionDenied(DomainError):
    """The orchestrator's process lacks the privilege a change of the host needs (seed
    000's code); not the caller's permission, which is FORBIDDEN."""

    status_code = 403
    code = "PERMISSION_DENIED"


class JournalUnavailable(DomainError):
    """The host keeps no journal the orchestrator can read (`GET /logs`)."""

    status_code = 503
    code = "JOURNAL_UNAVAILABLE"


class ProviderNotConfigured(DomainError):
    status_code = 422
    code = "PROVIDER_ERROR"


class ProviderFailed(DomainError):
    """A provider could not answer a read-only operation."""

    status_code = 422
    code = "PROVIDER_ERROR"


class VmNotFound(NotFound):
    code = "VM_NOT_FOUND"


class VmInvalidState(Conflict):
    """The VM is not in a state the operation applies to (start a running VM…)."""

    code = "VM_INVALID_STATE"


class QuotaExceeded(Conflict):
    code = "QUOTA_EXCEEDED"


class NoHypervisor(DomainError):
    """VMs cannot run on this host (QEMU is not installed, or no instance runs them)."""

    status_code = 503
    code = "NO_HYPERVISOR"
