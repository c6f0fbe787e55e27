"""What a request may hold, checked before anything is built from it (both apps).

- No request holds NUL (PostgreSQL can neither store nor compare it): `refuse_nul`,
  an ASGI middleware, answers for the path and query before guards and audit see
  them; the body checks below look for it in bodies.
- A JSON body nests at most `server.max_body_depth` deep. Decoders recurse once per
  level (msgspec raises `RecursionError` past ~1,000), so `json_depth` measures the
  bytes first, at C speed: escapes dropped, strings cut out at their quotes, the
  brackets kept, and the running depth's maximum taken.
- A YAML body (`load_yaml`) is composed with the same depth limit, and the nodes its
  aliases stand for are counted, up to `server.max_body_nodes`, before anything is
  constructed: a few hundred bytes of anchors cannot become millions of objects.
- A body a handler takes as `data` is decoded strictly (no "8" for 8, no 0 for false,
  no number for a timestamp), and integer, boolean and timestamp query parameters are
  held to their plain spelling, before Litestar's own conversion, which is lax.

`screen_request` is the `before_request` hook doing the body and query checks: it runs
after the guards (an unauthenticated body is never read) and before Litestar decodes.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from itertools import accumulate
from typing import Any

import msgspec
import yaml
from litestar import Request
from litestar.enums import ScopeType
from litestar.handlers import HTTPRouteHandler
from litestar.params import ParameterKwarg
from litestar.types import ASGIApp, Receive, Scope, Send
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import Node, ScalarNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from orchestrator.errors import DomainError, InvalidInput
from orchestrator.settings import ServerSettings

YAML_TYPES = ("application/yaml", "text/yaml", "application/x-yaml", "text/x-yaml")
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: A handler that reads its body itself names the type here, for this module and the
#: OpenAPI documents: `opt={REQUEST_BODY: (Batch, ("application/json", …))}`.
REQUEST_BODY = "request_body"


@dataclass(frozen=True, slots=True)
class BodyLimits:
    depth: int
    nodes: int

    @classmethod
    def of(cls, server: ServerSettings) -> BodyLimits:
        return cls(depth=server.max_body_depth, nodes=server.max_body_nodes)


class TooDeep(InvalidInput):
    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the request body nests deeper than {limit} levels of objects and arrays "
            "(server.max_body_depth)"
        )


NUL_IN_BODY = "the request body holds a NUL character (\\u0000), which no field accepts"


class BadBody(DomainError):
    """A body that does not parse at all (400, as Litestar answers one)."""


# --- JSON depth -------------------------------------------------------------------------

_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')
_STEP = tuple(1 if b in b"[{" else -1 if b in b"]}" else 0 for b in range(256))


def json_depth(body: bytes) -> int:
    """How deep the objects and arrays of a JSON text nest (0 for a scalar).

    Exact for valid JSON; for invalid JSON a number the decoder's error will make moot.
    """
    # An escaped backslash, then an escaped quote, delimit nothing; every other quote
    # opens or closes a string, so between them every other piece is string content.
    kept = body.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_STRUCTURE)
    brackets = b"".join(kept.split(b'"')[::2])
    if not brackets:
        return 0
    return max(0, max(accumulate(map(_STEP.__getitem__, brackets))))


def check_json_depth(body: bytes, limit: int) -> None:
    # Fewer openings than the limit cannot nest past it: most bodies stop here.
    if body.count(b"[") + body.count(b"{") > limit and json_depth(body) > limit:
        raise TooDeep(limit)


def check_json_nul(body: bytes) -> None:
    """Refuse a JSON text with a NUL in a string (JSON can only spell it `\\u0000`)."""
    if b"\\u0000" in body and b"\\u0000" in body.replace(b"\\\\", b""):
        raise InvalidInput(NUL_IN_BODY)


# --- YAML --------------------------------------------------------------------------------


class _PyParser(Reader, Scanner, Parser):
    """PyYAML's own parser, where it was built without libyaml."""

    def __init__(self, stream: bytes) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)


#: libyaml's parser, at C speed, when PyYAML has it; composing stays in Python, here,
#: where it can be limited.
_Parser: Any = getattr(getattr(yaml, "cyaml", None), "CParser", _PyParser)


class _LimitedLoader(Composer, _Parser, SafeConstructor, Resolver):  # type: ignore[misc]
    """`yaml.SafeLoader`, refusing nesting past `limits.depth` and documents that expand
    past `limits.nodes` nodes (an alias counts as everything its anchor holds)."""

    def __init__(self, stream: bytes, limits: BodyLimits) -> None:
        _Parser.__init__(self, stream)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self.limits = limits
        self.nesting = 0
        self.count = 0
        #: composed node -> nodes it expands to; absent while it is being composed
        self.expanded: dict[Node, int] = {}

    def _add(self, nodes: int) -> None:
        self.count += nodes
        if self.count > self.limits.nodes:
            raise InvalidInput(
                f"the YAML body expands to more than {self.limits.nodes} nodes, anchors "
                "and aliases counted as what they stand for (server.max_body_nodes)"
            )

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(AliasEvent):
            anchored = self.anchors.get(self.peek_event().anchor)
            if anchored is not None:
                if anchored not in self.expanded:
                    raise InvalidInput("the YAML body has an alias inside its own anchor")
                self._add(self.expanded[anchored])
            return super().compose_node(parent, index)
        self.nesting += 1
        if self.nesting > self.limits.depth:
            raise TooDeep(self.limits.depth)
        before = self.count
        self._add(1)
        node = super().compose_node(parent, index)
        self.nesting -= 1
        if isinstance(node, ScalarNode) and "\x00" in node.value:
            raise InvalidInput(NUL_IN_BODY)
        if node is not None:
            self.expanded[node] = self.count - before
        return node


def load_yaml(body: bytes, limits: BodyLimits) -> Any:
    """`yaml.safe_load` within the limits: 400 for YAML that does not parse, 422 past a
    limit."""
    loader = _LimitedLoader(body, limits)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise BadBody(f"the request body is not valid YAML: {exc}") from None
    finally:
        loader.dispose()


# --- the hooks ---------------------------------------------------------------------------


def refuse_nul(app: ASGIApp) -> ASGIApp:
    """ASGI middleware: 422 for a NUL in the path or the query string."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            query = scope.get("query_string", b"")
            if "\x00" in scope["path"] or b"%00" in query or b"\x00" in query:
                raise InvalidInput("the path or query holds a NUL character")
        await app(scope, receive, send)

    return middleware


def _is_timestamp(raw: str) -> bool:
    try:
        msgspec.convert(raw, datetime)  # strict: RFC 3339 text only
    except msgspec.ValidationError:
        return False
    return True


#: How a query value of each type must be written; Litestar would also take "1.0" for
#: 1, "1" for true and 0.5 for a moment in 1970.
_QUERY_RULES: dict[Any, tuple[Callable[[str], object], str]] = {
    bool: (lambda raw: raw in ("true", "false"), "true or false"),
    int: (re.compile(r"-?(0|[1-9][0-9]*)").fullmatch, "an integer"),
    datetime: (_is_timestamp, "an ISO 8601 timestamp (for example 2025-09-26T10:00:00Z)"),
}


@dataclass(frozen=True, slots=True)
class _Expects:
    """What a handler takes from a request, for the strict checks."""

    body: Any  # the type of `data`, or None
    reads_body: bool
    #: (name, type) of the query parameters `_QUERY_RULES` knows
    query: tuple[tuple[str, Any], ...]


@cache
def _expects(handler: Hashable) -> _Expects:
    assert isinstance(handler, HTTPRouteHandler)
    parameters = handler.parsed_fn_signature.parameters
    data = parameters.get("data")
    query = []
    for name, field in parameters.items():
        kinds = [t.annotation for t in field.inner_types] if field.is_optional else []
        kind = next((k for k in (field.annotation, *kinds) if k in _QUERY_RULES), None)
        if kind is None or any(f"{{{name}:" in path for path in handler.paths):
            continue
        kwarg = field.kwarg_definition
        alias = kwarg.name if isinstance(kwarg, ParameterKwarg) and kwarg.name else name
        query.append((alias, kind))
    return _Expects(
        body=data.annotation if data is not None else None,
        reads_body=data is not None or REQUEST_BODY in handler.opt,
        query=tuple(query),
    )


@cache
def _strict(body_type: Any) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(body_type, strict=True)


def screen_request(limits: BodyLimits) -> Callable[[Request[Any, Any, Any]], Awaitable[None]]:
    """The `before_request` hook: strict query values, then the body's depth, its
    strict decoding and NUL."""

    async def screen(request: Request[Any, Any, Any]) -> None:
        expects = _expects(request.route_handler)
        for name, kind in expects.query:
            valid, what = _QUERY_RULES[kind]
            for raw in request.query_params.getall(name, []):
                if not valid(raw):
                    raise InvalidInput(f"{name}: '{raw}' is not {what}")
        if not expects.reads_body or request.method not in BODY_METHODS:
            return
        body = await request.body()
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media in YAML_TYPES and expects.body is None:
            return  # the handler reads YAML itself, with `load_yaml`
        check_json_depth(body, limits.depth)
        if expects.body is not None:  # first: its errors name the field
            try:
                _strict(expects.body).decode(body)
            except msgspec.ValidationError as exc:
                raise InvalidInput(f"invalid request: {exc}") from None
            except msgspec.DecodeError as exc:
                raise BadBody(f"the request body could not be decoded: {exc}") from None
        check_json_nul(body)  # in free-form values too

    return screen
