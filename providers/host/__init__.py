"""The `host` provider type: the orchestrator's own machine as resource kinds
(network interfaces first). See `docs/host.md`."""

from providers.host._provider import HostProvider

__all__ = ["HostProvider"]
