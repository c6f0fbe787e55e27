"""The Docker Engine REST API over a unix socket, through `aiodocker`.

`aiodocker` (aio-libs) is an asyncio client of the Docker Engine API: the orchestrator is
asyncio throughout, so a call never holds a thread, and one client speaks to a Docker
Engine and to podman's Docker-compatible service (`podman system service`) alike. The
errors the rest of the provider sees are two: `EngineUnavailable` (nothing answers on
the socket) and `EngineFailed` (the engine refused, with its status and message).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiodocker
import aiohttp

from providers.containers._errors import (
    EngineFailed,
    EngineNotFound,
    EngineRefused,
    EngineUnavailable,
)

#: aiodocker's status for "the socket did not answer".
CANNOT_CONNECT = 900


def engine_error(exc: aiodocker.DockerError) -> EngineFailed:
    message = str(exc.message or "").strip() or f"the engine answered {exc.status}"
    if exc.status == 404:
        return EngineNotFound(404, message)
    if exc.status == 0 or 400 <= exc.status < 500:
        return EngineRefused(exc.status, message)
    return EngineFailed(exc.status, message)


@contextlib.asynccontextmanager
async def connect(socket: str) -> AsyncIterator[aiodocker.Docker]:
    """A client for one operation; errors translated (see the module's docstring)."""
    try:
        client = aiodocker.Docker(url=f"unix://{socket}")
    except (OSError, ValueError) as exc:
        raise EngineUnavailable(f"no container engine at {socket}: {exc}") from exc
    try:
        yield client
    except aiodocker.DockerError as exc:
        if exc.status == CANNOT_CONNECT:
            raise EngineUnavailable(
                f"no container engine answers at {socket}: {exc.message}"
            ) from exc
        raise engine_error(exc) from exc
    except (aiohttp.ClientConnectionError, FileNotFoundError, ConnectionError) as exc:
        raise EngineUnavailable(f"no container engine answers at {socket}: {exc}") from exc
    finally:
        await client.close()


async def ping(socket: str) -> Mapping[str, Any]:
    """The engine's version document (`Version`, `Components`)."""
    async with connect(socket) as client:
        version: Mapping[str, Any] = await client.version()
        return version


def runtime_name(version: Mapping[str, Any]) -> str:
    """`podman` or `docker`, from the version document."""
    components = version.get("Components") or []
    names = " ".join(str(c.get("Name", "")) for c in components if isinstance(c, Mapping))
    return "podman" if "podman" in names.lower() else "docker"
