"""The `containers` provider type: containers, images and app deployments on a container
engine (podman's Docker-compatible service or a Docker Engine), docs/deployments.md."""

from typing import TYPE_CHECKING, Any

from providers.containers._errors import EngineFailed, EngineRefused, EngineUnavailable

if TYPE_CHECKING:
    from providers.containers._provider import ContainersProvider

__all__ = ["ContainersProvider", "EngineFailed", "EngineRefused", "EngineUnavailable"]


def __getattr__(name: str) -> Any:
    # The provider (and the engine's client library) is imported when an instance is
    # made, not by whoever only needs the errors or the kinds.
    if name == "ContainersProvider":
        from providers.containers._provider import ContainersProvider

        return ContainersProvider
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
