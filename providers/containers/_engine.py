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

#: The API version (`v1.41`) and the version document per socket, each asked once:
#: aiodocker otherwise asks `/version` on each new client's first request to learn the
#: API version, and podman takes a third of a second to answer it (most of a replica's
#: start, see tests/perf/bench_deployments.py). Forgotten when the socket stops
#: answering (the engine behind it may change).
_API_VERSIONS: dict[str, str] = {}
_VERSIONS: dict[str, Mapping[str, Any]] = {}


def _forget(socket: str) -> None:
    _API_VERSIONS.pop(socket, None)
    _VERSIONS.pop(socket, None)


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
        client = aiodocker.Docker(
            url=f"unix://{socket}", api_version=_API_VERSIONS.get(socket, "auto")
        )
    except (OSError, ValueError) as exc:
        raise EngineUnavailable(f"no container engine at {socket}: {exc}") from exc
    try:
        yield client
    except aiodocker.DockerError as exc:
        if exc.status == CANNOT_CONNECT:
            _forget(socket)
            raise EngineUnavailable(
                f"no container engine answers at {socket}: {exc.message}"
            ) from exc
        raise engine_error(exc) from exc
    except (aiohttp.ClientConnectionError, FileNotFoundError, ConnectionError) as exc:
        _forget(socket)
        raise EngineUnavailable(f"no container engine answers at {socket}: {exc}") from exc
    finally:
        if client.api_version != "auto" and socket not in _API_VERSIONS:
            _API_VERSIONS[socket] = client.api_version
        await client.close()


async def version_of(client: aiodocker.Docker, socket: str) -> Mapping[str, Any]:
    """The version document of the engine on `socket` (through `client`), asked once."""
    if socket not in _VERSIONS:
        _VERSIONS[socket] = await client.version()
    return _VERSIONS[socket]


async def ping(socket: str) -> Mapping[str, Any]:
    """The engine's version document (`Version`, `Components`), asked now."""
    async with connect(socket) as client:
        version: Mapping[str, Any] = await client.version()
        _VERSIONS[socket] = version
        return version


def runtime_name(version: Mapping[str, Any]) -> str:
    """`podman` or `docker`, from the version document."""
    components = version.get("Components") or []
    names = " ".join(str(c.get("Name", "")) for c in components if isinstance(c, Mapping))
    return "podman" if "podman" in names.lower() else "docker"
