"""The `containers` provider type: containers, images and app deployments on a container
engine (podman's Docker-compatible service or a Docker Engine), docs/deployments.md."""

from providers.containers._engine import EngineFailed, EngineRefused, EngineUnavailable
from providers.containers._provider import ContainersProvider

__all__ = ["ContainersProvider", "EngineFailed", "EngineRefused", "EngineUnavailable"]
