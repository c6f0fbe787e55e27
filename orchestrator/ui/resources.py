"""The console's resource pages (docs/ui.md): VMs with their serial console, deployments
with their logs following live, and the host.

Like every page of the console, these read and act through the public API in process
(`orchestrator.ui.api`) with the session's token, and ask the policies only which
buttons to show. The two streams a page opens (a VM's serial console, a deployment's
logs) go through doors of the console's own (`/ui/vms/{id}/console`,
`/ui/deployments/{id}/logs/stream`): a page's script cannot read the `HttpOnly` session
cookie to authenticate the API's socket itself, so the door accepts only that cookie, only
from a page of this server, and hands the socket to the API's own route with the token as
its bearer: the API's guard, policies, limits and re-checks apply unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from litestar import Request, Response, Router, WebSocket, get, post, websocket

from orchestrator.api.security import OWN_ACCESS
from orchestrator.service import Orchestrator
from orchestrator.ui.api import Reply
from orchestrator.ui.routes import (
    PAGE_SIZE,
    Session,
    foreign_origin,
    open_session,
    page_count,
    page_links,
    page_number,
    posted_form,
    templates,
    to_login,
)
from orchestrator.ui.session import SESSION_COOKIE

VM_STATUSES = ("creating", "starting", "running", "stopping", "stopped", "deleting", "error")
#: A VM's actions: the API's path under `/vms/{id}`, the button, and the confirmation
#: (None: none asked).
VM_ACTIONS: dict[str, tuple[str, str | None]] = {
    "start": ("Start", None),
    "stop": ("Stop", "Stop this VM? The guest is asked to power off, then stopped."),
    "restart": ("Restart", "Restart this VM? The guest is powered off and started again."),
    "force-stop": ("Force stop", "Force-stop this VM? QEMU ends at once, like pulling the plug."),
    "delete": ("Delete", "Delete this VM and its disk? This cannot be undone."),
}
DEPLOYMENT_STATUSES = ("pending", "running", "stopped", "failed", "updating")
#: Log lines a deployment's page starts with (the stream's `tail`) and keeps.
LOG_TAIL = 100
LOG_KEPT = 1000
#: The API's limit for one page of deployments.
DEPLOYMENTS_PAGE = 25
#: A name and its id: what a console socket door may name (never a path of its own).
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def human_bytes(value: object) -> str:
    """`1.5 GiB`: a count of bytes as a person reads it ("" for none)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return ""
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(amount) < 1024 or unit == "TiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return ""  # not reached


def epoch(value: object) -> str:
    """A Unix time as `2026-12-07 21:30:00 UTC` ("" for none)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return ""
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


templates.filters.update(bytes=human_bytes, epoch=epoch)


def _q(ident: str) -> str:
    return quote(ident, safe="")


def _forbidden(session: Session, what: str) -> Response[Any]:
    return session.failure(
        Reply(403, {"error": f"your policies do not let you {what}", "code": "FORBIDDEN"})
    )


async def _may(session: Session, action: str, resource: str, owner: str | None = None) -> bool:
    """Whether the policies let the session do `action` (with the resource's owner, as
    the VM and deployment APIs check it)."""
    context: dict[str, Any] = {
        "ip": session.client[0] if session.client else None,
        "method": "POST",
    }
    if owner is not None:
        context["owner"] = owner
    return await session.security.gate.allows(session.principal, action, resource, context)


def _done(session: Session, back: str, reply: Reply, done: str) -> Response[Any]:
    if not reply.ok:
        return session.failure(reply)
    return session.redirect(f"{back}?{urlencode({'notice': done})}")


# -- VMs ---------------------------------------------------------------------------------------


async def _vm_rows(session: Session, status: str, number: int) -> Reply:
    return await session.api.get(
        "/vms", status=status, limit=PAGE_SIZE, offset=(number - 1) * PAGE_SIZE
    )


@get("/ui/vms", opt={OWN_ACCESS: True}, include_in_schema=False)
async def vms(request: Request[Any, Any, Any]) -> Response[Any]:
    """The caller's VMs (`GET /vms`), refreshed as VM workflows change status; with
    `?fragment=1` the table alone, which the page fetches again."""
    session = await open_session(request)
    if session is None:
        return to_login(request)
    status = request.query_params.get("status") or ""
    if status not in VM_STATUSES:
        status = ""
    number = page_number(request)
    orchestrator: Orchestrator = request.app.state.orchestrator
    since = await orchestrator.records.last_seq()
    reply = await _vm_rows(session, status, number)
    if not reply.ok:
        return session.failure(reply)
    pages = page_count(reply.total)

    def link(to: int) -> str:
        return "/ui/vms?" + urlencode(
            {k: v for k, v in {"status": status, "page": to}.items() if v}
        )

    context: dict[str, Any] = {
        "vms": reply.data or [],
        "total": reply.total,
        **page_links(number, pages, link),
    }
    if request.query_params.get("fragment"):
        return session.render("vms_table.html", **context)
    return session.render(
        "vms.html",
        title="Virtual machines",
        statuses=VM_STATUSES,
        selected_status=status,
        since=since,
        fragment_url=link(number) + ("&" if "?" in link(number) else "?") + "fragment=1",
        **context,
    )


async def _vm_context(session: Session, vm: dict[str, Any]) -> dict[str, Any]:
    resource, owner = f"vms:{vm['id']}", str(vm.get("owner") or "")
    allowed = {name: await _may(session, name, resource, owner) for name in VM_ACTIONS}
    return {
        "vm": vm,
        "actions": [
            {
                "name": name,
                "label": label,
                "confirm": confirm,
                "enabled": _vm_can(vm["status"], name),
            }
            for name, (label, confirm) in VM_ACTIONS.items()
            if allowed[name]
        ],
        "can_console": await _may(session, "console", resource, owner),
    }


def _vm_can(status: str, action: str) -> bool:
    """Whether the API would take `action` now (the buttons it would refuse are disabled;
    the API still decides)."""
    if action == "start":
        return status in ("stopped", "error")
    if action in ("stop", "restart", "force-stop"):
        return status == "running"
    return status not in ("creating", "deleting")


@get("/ui/vms/{vm_id:str}", opt={OWN_ACCESS: True}, include_in_schema=False)
async def vm(request: Request[Any, Any, Any], vm_id: str) -> Response[Any]:
    """A VM: its fields, its last workflow, its actions and its serial console; with
    `?fragment=1` the facts and actions alone (fetched again as its workflows change)."""
    session = await open_session(request)
    if session is None:
        return to_login(request)
    orchestrator: Orchestrator = request.app.state.orchestrator
    since = await orchestrator.records.last_seq()
    reply = await session.api.get(f"/vms/{_q(vm_id)}")
    if not reply.ok:
        return session.failure(reply)
    context = await _vm_context(session, reply.data)
    if request.query_params.get("fragment"):
        return session.render("vm_panel.html", **context)
    return session.render(
        "vm.html",
        title=reply.data["name"],
        since=since,
        notice=request.query_params.get("notice"),
        **context,
    )


@post(
    "/ui/vms/{vm_id:str}/{action:str}",
    opt={OWN_ACCESS: True},
    include_in_schema=False,
    status_code=303,
)
async def vm_action(request: Request[Any, Any, Any], vm_id: str, action: str) -> Response[Any]:
    """`POST /vms/{id}/{action}`, or `DELETE /vms/{id}` (then: the list)."""
    checked = await posted_form(request)
    if isinstance(checked, Response):
        return checked
    session, _ = checked
    if action not in VM_ACTIONS:
        return session.failure(
            Reply(404, {"error": f"no VM action '{action}'", "code": "NOT_FOUND"})
        )
    back = f"/ui/vms/{_q(vm_id)}"
    if action == "delete":
        reply = await session.api.call("DELETE", f"/vms/{_q(vm_id)}")
        return _done(session, "/ui/vms", reply, "Delete requested")
    reply = await session.api.post(f"/vms/{_q(vm_id)}/{action}")
    return _done(session, back, reply, f"{VM_ACTIONS[action][0]} requested")


# -- deployments ---------------------------------------------------------------------------


@get("/ui/deployments", opt={OWN_ACCESS: True}, include_in_schema=False)
async def deployments(request: Request[Any, Any, Any]) -> Response[Any]:
    """The caller's deployments (`GET /deployments`), refreshed as deployment workflows
    change status; `?fragment=1`: the table alone."""
    session = await open_session(request)
    if session is None:
        return to_login(request)
    status = request.query_params.get("status") or ""
    if status not in DEPLOYMENT_STATUSES:
        status = ""
    number = page_number(request)
    orchestrator: Orchestrator = request.app.state.orchestrator
    since = await orchestrator.records.last_seq()
    reply = await session.api.get(
        "/deployments", status=status, page=number, limit=DEPLOYMENTS_PAGE
    )
    if not reply.ok:
        return session.failure(reply)
    listed = reply.data or {}
    pages = max(1, int(listed.get("pagination", {}).get("total_pages") or 1))

    def link(to: int) -> str:
        query = {k: v for k, v in {"status": status, "page": to}.items() if v}
        return "/ui/deployments?" + urlencode(query)

    context: dict[str, Any] = {
        "deployments": listed.get("deployments", []),
        "total": listed.get("pagination", {}).get("total", 0),
        **page_links(number, pages, link),
    }
    if request.query_params.get("fragment"):
        return session.render("deployments_table.html", **context)
    return session.render(
        "deployments.html",
        title="Deployments",
        statuses=DEPLOYMENT_STATUSES,
        selected_status=status,
        since=since,
        fragment_url=link(number) + "&fragment=1",
        **context,
    )


async def _deployment_context(session: Session, ident: str) -> Reply | dict[str, Any]:
    """A deployment's record, its status (replicas desired and ready, each instance) and
    each replica's metrics."""
    record = await session.api.get(f"/deployments/{_q(ident)}")
    if not record.ok:
        return record
    status = await session.api.get(f"/deployments/{_q(ident)}/status")
    if not status.ok:
        return status
    metrics = await session.api.get(f"/deployments/{_q(ident)}/metrics")
    sampled = (metrics.data or {}).get("metrics") if metrics.ok else None
    by_name = {m["name"]: m for m in (sampled or {}).get("replicas", [])}
    instances = [
        {**instance, "metrics": by_name.get(str(instance.get("name")))}
        for instance in status.data.get("instances", [])
    ]
    resource = f"deployments:{ident}"
    owner = str(record.data.get("user_id") or "")
    return {
        "deployment": record.data,
        "state": status.data,
        "instances": instances,
        "total": (sampled or {}).get("total"),
        "metrics_error": None if metrics.ok else metrics.error,
        "can_update": await _may(session, "update", resource, owner),
        "can_delete": await _may(session, "delete", resource, owner),
    }


@get("/ui/deployments/{deployment_id:str}", opt={OWN_ACCESS: True}, include_in_schema=False)
async def deployment(request: Request[Any, Any, Any], deployment_id: str) -> Response[Any]:
    """A deployment: desired and ready replicas, status, URL, each replica with its
    metrics, the actions, and its logs following live; `?fragment=1`: the panel alone."""
    session = await open_session(request)
    if session is None:
        return to_login(request)
    orchestrator: Orchestrator = request.app.state.orchestrator
    since = await orchestrator.records.last_seq()
    context = await _deployment_context(session, deployment_id)
    if isinstance(context, Reply):
        return session.failure(context)
    if request.query_params.get("fragment"):
        return session.render("deployment_panel.html", **context)
    return session.render(
        "deployment.html",
        title=context["deployment"].get("app_name") or deployment_id,
        since=since,
        notice=request.query_params.get("notice"),
        log_tail=LOG_TAIL,
        log_kept=LOG_KEPT,
        **context,
    )


@post(
    "/ui/deployments/{deployment_id:str}/{action:str}",
    opt={OWN_ACCESS: True},
    include_in_schema=False,
    status_code=303,
)
async def deployment_action(
    request: Request[Any, Any, Any], deployment_id: str, action: str
) -> Response[Any]:
    """`PATCH …/scale`, `POST …/stop` and `…/start`, `DELETE /deployments/{id}`."""
    checked = await posted_form(request)
    if isinstance(checked, Response):
        return checked
    session, form = checked
    path = f"/deployments/{_q(deployment_id)}"
    back = f"/ui{path}"
    if action == "scale":
        replicas = form.get("replicas", "").strip()
        if not replicas.isdigit():
            return session.failure(
                Reply(422, {"error": "replicas: a whole number", "code": "INVALID_INPUT"})
            )
        reply = await session.api.call("PATCH", f"{path}/scale", json={"replicas": int(replicas)})
        return _done(session, back, reply, f"Scaling to {int(replicas)} requested")
    if action in ("stop", "start"):
        reply = await session.api.post(f"{path}/{action}")
        return _done(session, back, reply, f"{action.capitalize()} requested")
    if action == "delete":
        reply = await session.api.call("DELETE", path)
        return _done(session, "/ui/deployments", reply, "Delete requested")
    return session.failure(
        Reply(404, {"error": f"no deployment action '{action}'", "code": "NOT_FOUND"})
    )


# -- the host ------------------------------------------------------------------------------


def _host_instances(request: Request[Any, Any, Any]) -> list[str]:
    orchestrator: Orchestrator = request.app.state.orchestrator
    return sorted(name for name, kind in orchestrator.catalog.types.items() if kind == "host")


@get("/ui/host", opt={OWN_ACCESS: True}, include_in_schema=False)
async def host(request: Request[Any, Any, Any]) -> Response[Any]:
    """The host: its summary, interfaces, disks and Linux accounts (read-only), or a
    page saying no `host` instance is configured."""
    session = await open_session(request)
    if session is None:
        return to_login(request)
    instances = _host_instances(request)
    if not instances:
        return session.render("host.html", title="Host", configured=False)
    instance = request.query_params.get("instance") or instances[0]
    if instance not in instances:
        instance = instances[0]
    sections: dict[str, Any] = {}
    errors: dict[str, str] = {}
    refusals: list[Reply] = []
    for name, path, key in (
        ("summary", "/system/summary", None),
        ("memory", "/system/memory", None),
        ("interfaces", "/network/interfaces", "interfaces"),
        ("disks", "/storage/disks", "disks"),
        ("users", "/host/users", "users"),
    ):
        reply = await session.api.get(path, instance=instance)
        if reply.status == 401:
            return session.failure(reply)
        if reply.ok:
            sections[name] = reply.data.get(key) if key else reply.data
        else:
            errors[name] = f"{reply.error} ({reply.code or reply.status})"
            refusals.append(reply)
    if not sections:  # nothing to show: the API's first refusal, as any page shows it
        return session.failure(refusals[0])
    return session.render(
        "host.html",
        title="Host",
        configured=True,
        instance=instance,
        instances=instances,
        errors=errors,
        **sections,
    )


@get("/ui/host/logs", opt={OWN_ACCESS: True}, include_in_schema=False)
async def host_logs(request: Request[Any, Any, Any]) -> Response[Any]:
    """The journal (`GET /logs`), newest first, by unit and priority."""
    session = await open_session(request)
    if session is None:
        return to_login(request)
    instances = _host_instances(request)
    if not instances:
        return session.render("host.html", title="Host", configured=False)
    query = request.query_params
    instance = query.get("instance") if query.get("instance") in instances else instances[0]
    service = (query.get("service") or "").strip()[:200]
    priority = (query.get("priority") or "").strip()[:10]
    number = page_number(request)
    reply = await session.api.get(
        "/logs",
        instance=instance,
        service=service,
        priority=priority,
        page=number,
        page_size=100,
    )
    if not reply.ok:
        return session.failure(reply)
    total = int(reply.data.get("total_count") or 0)
    pages = page_count(total, 100)

    def link(to: int) -> str:
        values = {"instance": instance, "service": service, "priority": priority, "page": to}
        return "/ui/host/logs?" + urlencode({k: v for k, v in values.items() if v})

    return session.render(
        "host_logs.html",
        title="Host journal",
        instance=instance,
        logs=reply.data.get("logs", []),
        service=service,
        priority=priority,
        total=total,
        **page_links(number, pages, link),
    )


# -- the socket doors ----------------------------------------------------------------------

#: The ASGI keys a forwarded socket keeps (the rest is the console route's own).
_SCOPE_KEYS = ("type", "asgi", "http_version", "scheme", "server", "client", "root_path")


async def _door(socket: WebSocket[Any, Any, Any], path: str, query: Mapping[str, str]) -> None:
    """Hand a console page's socket to the API's socket route `path`, with the session
    cookie's token as its bearer. Only a same-origin page may (its `Origin` must name
    this server: a page of another site cannot, whatever cookies the browser holds), and
    nothing else of the request reaches the API (its cookies stay here)."""
    token = socket.cookies.get(SESSION_COOKIE)
    origin = socket.headers.get("origin")
    if not token or origin is None or foreign_origin(origin, socket.headers.get("host")):
        await socket.close(code=1008, reason="a console page of this server only")
        return
    scope = socket.scope
    headers = [
        (name, value)
        for name, value in scope["headers"]
        if name.lower() not in (b"authorization", b"cookie")
    ]
    headers.append((b"authorization", f"Bearer {token}".encode()))
    inner: dict[str, Any] = {key: scope[key] for key in _SCOPE_KEYS if key in scope}  # type: ignore[literal-required]
    inner.update(
        path=path,
        raw_path=path.encode(),
        query_string=urlencode(dict(query)).encode(),
        headers=headers,
        subprotocols=[],
        extensions=dict(scope.get("extensions") or {}),
    )
    await socket.app(inner, socket.receive, socket.send)  # type: ignore[arg-type]


def _plain(ident: str) -> bool:
    return bool(ident) and len(ident) <= 128 and set(ident) <= _SAFE


@websocket("/ui/vms/{vm_id:str}/console", opt={OWN_ACCESS: True})
async def vm_console_door(socket: WebSocket[Any, Any, Any], vm_id: str) -> None:
    """The VM's serial console (`/api/v1/vms/{id}/console`) for its page."""
    if not _plain(vm_id):
        await socket.close(code=1008, reason="VM_NOT_FOUND")
        return
    await _door(socket, f"/api/v1/vms/{vm_id}/console", {})


@websocket("/ui/deployments/{deployment_id:str}/logs/stream", opt={OWN_ACCESS: True})
async def deployment_logs_door(socket: WebSocket[Any, Any, Any], deployment_id: str) -> None:
    """The deployment's logs (`/deployments/{id}/logs/stream`) for its page."""
    if not _plain(deployment_id):
        await socket.close(code=1008, reason="NOT_FOUND")
        return
    tail = socket.query_params.get("tail") or str(LOG_TAIL)
    await _door(socket, f"/deployments/{deployment_id}/logs/stream", {"tail": tail})


def resources_router() -> Router:
    return Router(
        path="/",
        route_handlers=[
            vms,
            vm,
            vm_action,
            deployments,
            deployment,
            deployment_action,
            host,
            host_logs,
            vm_console_door,
            deployment_logs_door,
        ],
        opt={OWN_ACCESS: True},
        include_in_schema=False,
    )
