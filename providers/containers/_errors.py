"""What the engine's failures are, without the engine's client: the API imports these
to map them to answers, and must not import `aiodocker` (and aiohttp) for it."""

from __future__ import annotations

from providers.base import PermanentProviderError, ProviderError, ResourceNotFound


class EngineUnavailable(ProviderError):
    """No container engine answers on the configured socket (retried: it may come back)."""


class EngineFailed(ProviderError):
    """The engine answered with an error; `status` is its HTTP status (0 for an error
    reported inside a stream, a failed pull)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class EngineRefused(EngineFailed, PermanentProviderError):
    """The engine refused what was asked (a missing image, a name in use): not retried."""


class EngineNotFound(EngineRefused, ResourceNotFound):
    """The container or image named does not exist."""
