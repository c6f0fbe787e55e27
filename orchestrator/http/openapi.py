"""What the apps say about their routes, made to match what the servers accept.

Litestar writes the OpenAPI document from the handlers, but loses some of what msgspec
enforces when it decodes a body: `forbid_unknown_fields` (`additionalProperties:
false`), bounds of zero, the constraints on a list's items, a type's own
`extra_json_schema`. So `publish` states every request body with msgspec's own JSON
Schema (the decoder's rules, written by the decoder's library), documents the bodies
handlers read themselves (`limits.REQUEST_BODY`), states that no string of a request
holds NUL (`limits` refuses one in a path, a query or a body, free-form values
included) and adds the limits that come from the settings.

Litestar 2 also answers `OPTIONS` with the methods of the first handler registered on
a path only (litestar-org/litestar#4169, fixed in 3.0): `allow_every_method` lists
every method of the path.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Mapping
from typing import Annotated, Any

import anyio.to_thread
import msgspec
from litestar import Litestar, Router
from litestar.connection import ASGIConnection
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin, YamlRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.routes import HTTPRoute
from litestar.static_files import create_static_files_router
from litestar.types import Message, Scope

from orchestrator.fields import NO_NUL
from orchestrator.http.limits import REQUEST_BODY

REF = "#/components/schemas/{name}"
JSON = ("application/json",)


def _body_of(handler: HTTPRouteHandler) -> tuple[Any, tuple[str, ...]] | None:
    """The type of a handler's request body and its media types, or None."""
    declared: tuple[Any, tuple[str, ...]] | None = handler.opt.get(REQUEST_BODY)
    if declared is not None:
        return declared
    data = handler.parsed_fn_signature.parameters.get("data")
    if data is None:
        return None
    metas = tuple(m for m in data.metadata if isinstance(m, msgspec.Meta))
    return (Annotated[(data.annotation, *metas)] if metas else data.annotation), JSON


def _operations(app: Litestar, paths: Mapping[str, Any]) -> list[tuple[dict[str, Any], Any]]:
    """(published operation, route handler) for every documented handler and method."""
    found = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or route.path_format not in paths:
            continue
        for handler in route.route_handlers:
            for method in handler.http_methods:
                operation = paths[route.path_format].get(method.lower())
                if operation is not None and handler.include_in_schema:
                    found.append((operation, handler))
    return found


def _no_ref_siblings(schema: dict[str, Any]) -> dict[str, Any]:
    # msgspec puts a type's `extra_json_schema` beside its `$ref`, which JSON Schema
    # 2020-12 allows and older readers ignore; `allOf` is read the same by all.
    if "$ref" in schema and len(schema) > 1:
        extra = {k: v for k, v in schema.items() if k != "$ref"}
        return {**extra, "allOf": [{"$ref": schema["$ref"]}]}
    return schema


#: Any JSON value without a NUL: what a free-form field (`dict[str, Any]`) takes.
FREE_FORM = "FreeForm"
_FREE_OBJECT = {
    "type": "object",
    "additionalProperties": {"$ref": REF.format(name=FREE_FORM)},
    "propertyNames": {"pattern": NO_NUL},
}
_FREE_FORM_SCHEMA = {
    "anyOf": [
        {"type": "null"},
        {"type": "boolean"},
        {"type": "number"},
        {"type": "string", "pattern": NO_NUL},
        {"type": "array", "items": {"$ref": REF.format(name=FREE_FORM)}},
        _FREE_OBJECT,
    ]
}


def nul_free(schema: dict[str, Any]) -> None:
    """Say, all through a schema, that its strings hold no NUL (`limits` refuses one
    anywhere in a request), free-form values included."""
    if schema.get("type") == "string" and not {"pattern", "enum", "format", "const"} & set(schema):
        schema["pattern"] = NO_NUL
    if schema.get("type") == "object" and not {"properties", "additionalProperties"} & set(schema):
        schema.update(copy.deepcopy(_FREE_OBJECT))
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        for member in schema.get(key, []):
            nul_free(member)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            if schema[key] == {}:
                schema[key] = {"$ref": REF.format(name=FREE_FORM)}
            nul_free(schema[key])
    for name, member in schema.get("properties", {}).items():
        if member == {}:
            schema["properties"][name] = {"$ref": REF.format(name=FREE_FORM)}
        nul_free(member)


def _constrain(components: dict[str, Any], constraints: Mapping[str, Mapping[str, Any]]) -> None:
    """Apply `{"Component.property": {keyword: value}}` to the non-null alternatives."""
    for where, keywords in constraints.items():
        component, _, prop = where.partition(".")
        schema = components[component]["properties"][prop]
        for member in schema.get("anyOf", [schema]):
            if member.get("type") != "null":
                member.update(keywords)


#: Where `publish` keeps an app's corrections until its document is first asked for.
_PUBLICATION = "openapi_publication"


def publish(
    app: Litestar,
    constraints: Mapping[str, Mapping[str, Any]] | None = None,
    then: Callable[[], None] | None = None,
) -> None:
    """Correct the app's OpenAPI document in place before it is first served.

    `constraints` adds keywords that come from the settings to request components:
    `{"WorkflowIn.tasks": {"maxItems": 10_000}}`; `then` runs after the corrections
    (more of them, on the same document).

    Litestar builds the document when it is first asked for; so does this, not at
    start: building it was a third of an app's start-up. The schema router's guard
    (`openapi_config`) builds and corrects it once, in a thread, before any schema
    route answers.
    """
    app.state[_PUBLICATION] = _Publication(app, constraints or {}, then)


class _Publication:
    def __init__(
        self,
        app: Litestar,
        constraints: Mapping[str, Mapping[str, Any]],
        then: Callable[[], None] | None,
    ) -> None:
        self.app = app
        self.constraints = constraints
        self.then = then
        self.done = False
        self.lock = threading.Lock()

    def ensure(self) -> None:
        with self.lock:
            if not self.done:
                _correct(self.app, self.constraints)
                if self.then is not None:
                    self.then()
                self.done = True


async def _published_first(connection: ASGIConnection[Any, Any, Any, Any], _: Any) -> None:
    """The schema routes' guard: the document is corrected before it is served."""
    publication = connection.app.state.get(_PUBLICATION)
    if publication is not None and not publication.done:
        await anyio.to_thread.run_sync(publication.ensure)


def _correct(app: Litestar, constraints: Mapping[str, Mapping[str, Any]]) -> None:
    document: dict[str, Any] = app.plugins.get("OpenAPIPlugin").provide_openapi_schema()
    operations = _operations(app, document.get("paths", {}))
    bodies = [(operation, _body_of(handler)) for operation, handler in operations]
    typed = [(operation, body) for operation, body in bodies if body is not None]
    schemas, components = msgspec.json.schema_components(
        [body[0] for _, body in typed], ref_template=REF
    )
    for component in components.values():
        nul_free(component)
    components[FREE_FORM] = copy.deepcopy(_FREE_FORM_SCHEMA)
    document.setdefault("components", {}).setdefault("schemas", {}).update(components)
    _constrain(document["components"]["schemas"], constraints or {})
    for (operation, (_, media_types)), schema in zip(typed, schemas, strict=True):
        published = operation.setdefault("requestBody", {"required": True})
        published["content"] = {
            media: {"schema": _no_ref_siblings(schema)} for media in media_types
        }
    for operation, _ in operations:
        for parameter in operation.get("parameters", []):
            if parameter.get("in") in ("path", "query"):
                nul_free(parameter.setdefault("schema", {}))


def _methods(app: Any, template: str) -> list[str] | None:
    for route in app.routes:
        if isinstance(route, HTTPRoute) and route.path_format == template:
            return sorted(route.methods)
    return None


async def allow_every_method(message: Message, scope: Scope) -> None:
    """`before_send` hook: an `OPTIONS` answer's `Allow` lists every method of its path."""
    if message["type"] != "http.response.start" or scope.get("method") != "OPTIONS":
        return
    headers = list(message.get("headers") or [])
    if not any(name.lower() == b"allow" for name, _ in headers):
        return
    methods = _methods(scope["app"], str(scope.get("path_template", "")))
    if methods is None:
        return
    kept = [(name, value) for name, value in headers if name.lower() != b"allow"]
    message["headers"] = [*kept, (b"allow", ", ".join(methods).encode())]


#: Where the API documents' browser assets are served from (the `swagger-ui-bundle`
#: package's copy of Swagger UI): no CDN, so `/schema/swagger` works offline.
SCHEMA_ASSETS = "/schema/assets"
BEARER = "bearer"


def openapi_config(title: str) -> OpenAPIConfig:
    """Both apps' OpenAPI configuration: Swagger UI at `/schema` and `/schema/swagger`
    from the package's own assets, the documents at `/schema/openapi.json` and
    `/schema/openapi.yaml`, and a bearer scheme (a JWT or an API key), so "Try it out"
    sends a token. The scheme is optional at the top (`{}` beside it): the routes that
    need none (`/health`, logging in) are told apart in docs/api.md, not here."""
    assets = SCHEMA_ASSETS
    return OpenAPIConfig(
        title=title,
        version="1.0.0",
        openapi_router=Router(
            "/schema", route_handlers=[], include_in_schema=False, guards=[_published_first]
        ),
        render_plugins=[
            SwaggerRenderPlugin(
                js_url=f"{assets}/swagger-ui-bundle.js",
                css_url=f"{assets}/swagger-ui.css",
                standalone_preset_js_url=f"{assets}/swagger-ui-standalone-preset.js",
                favicon=f"<link rel='icon' type='image/png' href='{assets}/favicon-32x32.png'>",
                path=["/", "/swagger"],
            ),
            JsonRenderPlugin(),
            YamlRenderPlugin(),
        ],
        components=Components(
            security_schemes={
                BEARER: SecurityScheme(
                    type="http",
                    scheme="bearer",
                    description="A session's access token (POST /auth/login) or an API key",
                )
            }
        ),
        security=[{BEARER: []}, {}],
    )


def schema_assets() -> Router:
    """The Swagger UI files, served at `SCHEMA_ASSETS` (open, as `/schema` is)."""
    import swagger_ui_bundle  # the assets' package; nothing else of it is used

    return create_static_files_router(
        path=SCHEMA_ASSETS,
        directories=[swagger_ui_bundle.swagger_ui_path],
        include_in_schema=False,
        name="schema-assets",
    )
