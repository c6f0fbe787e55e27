"""Base-path aliases: one set of route handlers answering under several base paths.

The seeds' clients call the same endpoints under `/api/v1` (seeds 000 and 001) and
`/v1` (seed 002) that the orchestrator serves at its root. Registering every controller
once more per prefix doubled the app's route handlers, and Litestar deep-copies and
re-validates each one at start-up (a tenth of a second of CPU per start). Instead, a
request under an alias is routed as the root path it names: the prefix moves to the ASGI
scope's `root_path`, which Litestar's router strips before matching (as it does for an
app mounted behind a proxy) and puts back in `request.url`. So pagination links, the
audit trail and the request log still show the path the client called (`full_path`).

Only the first path segments given (those of the aliased controllers) are aliased:
`/api/v1/health` or `/api/v1/metrics` stay 404, as they were.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from litestar import Controller, Litestar
from litestar.handlers import BaseRouteHandler
from litestar.types import (
    ControllerRouterHandler,
    LifeSpanReceive,
    LifeSpanScope,
    LifeSpanSend,
    Receive,
    Scope,
    Send,
)


def first_segments(handlers: Iterable[ControllerRouterHandler]) -> frozenset[str]:
    """The first path segment of every route of these controllers and handlers."""
    paths: list[str] = []
    for item in handlers:
        if isinstance(item, type) and issubclass(item, Controller):
            inner = [vars(cls)[name] for cls in item.__mro__ for name in vars(cls)]
            paths += [
                f"{getattr(item, 'path', '')}/{path}"
                for handler in inner
                if isinstance(handler, BaseRouteHandler)
                for path in handler.paths
            ]
        elif isinstance(item, BaseRouteHandler):
            paths += list(item.paths)
        else:
            raise TypeError(f"cannot alias {item!r}: a controller or a route handler")
    return frozenset(segment for path in paths if (segment := path.strip("/").split("/")[0]))


class Aliases:
    """Prefixes, each aliasing the root routes whose first segment it lists."""

    def __init__(self, prefixes: Mapping[str, frozenset[str]]) -> None:
        self._prefixes = tuple(
            (prefix.rstrip("/"), segments) for prefix, segments in prefixes.items()
        )

    def route(self, scope: Scope) -> None:
        """Move an aliased request's prefix into `root_path` (in place)."""
        path, base = scope["path"], scope.get("root_path", "")
        rest = path[len(base) :] if base and path.startswith(base) else path
        for prefix, segments in self._prefixes:
            if rest.startswith(prefix + "/"):
                segment = rest[len(prefix) + 1 :].split("/", 1)[0]
                if segment in segments:
                    scope["root_path"] = base + prefix
                return


class AliasedLitestar(Litestar):
    """Litestar, with `aliases` applied to each request and WebSocket before routing."""

    aliases = Aliases({})

    async def __call__(
        self,
        scope: Scope | LifeSpanScope,
        receive: Receive | LifeSpanReceive,
        send: Send | LifeSpanSend,
    ) -> None:
        if scope["type"] in ("http", "websocket"):
            self.aliases.route(scope)  # type: ignore[arg-type]  # (not a lifespan)
        await super().__call__(scope, receive, send)


def full_path(scope: Mapping[str, Any]) -> str:
    """The path the client asked for, alias prefix included (after routing, `path` is
    what the router matched)."""
    return f"{scope.get('root_path', '')}{scope.get('path', '')}"
