"""The web console's routes: `/ui/…` pages, `/ui/ws`, `/ui/static/…`, and `/` sending a
browser to `/ui/` (docs/ui.md).

The orchestrator's guard (`orchestrator.api.security`) leaves these routes to the
console (their `opt` says `console`): a page authenticates its session cookie through
the same `Gatekeeper`, reads and acts through the public API in process
(`orchestrator.ui.api`), and asks the same policies (`Gatekeeper.allows`) only to decide
which buttons to show. A forced action is refused by the API's own guard.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import segno
from jinja2 import Environment, FileSystemLoader, select_autoescape
from litestar import Request, Response, Router, WebSocket, get, post, websocket
from litestar.datastructures import Cookie
from litestar.exceptions import NotFoundException
from litestar.response import Redirect
from litestar.static_files import create_static_files_router
from litestar.types import Message, Scope
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.api.monitoring import event_stream
from orchestrator.api.security import OWN_ACCESS, Security, access_of
from orchestrator.clock import format_duration, utcnow
from orchestrator.errors import DomainError
from orchestrator.event_names import EVENT_TYPES
from orchestrator.http.access import Principal
from orchestrator.http.errors import error_response
from orchestrator.service import Orchestrator
from orchestrator.ui.api import Api, Reply
from orchestrator.ui.dag import NODE_HEIGHT, NODE_WIDTH, layout
from orchestrator.ui.session import (
    CSRF_FIELD,
    CSRF_HEADER,
    REFRESH_COOKIE,
    SESSION_COOKIE,
    ControlCenter,
    Renewals,
    csrf_valid,
    forget_session,
    session_cookies,
)

HERE = Path(__file__).resolve().parent
PAGE_SIZE = 25
#: The most tasks one DAG page draws (pages of the API's maximum).
MAX_TASKS = 10_000
WORKFLOW_STATUSES = ("Pending", "Running", "Completed", "Failed", "Cancelled")
WORKFLOW_STATUSES_ALL = (*WORKFLOW_STATUSES, "RollingBack", "RolledBack")
FINAL = frozenset({"Completed", "Failed", "Cancelled", "RolledBack"})
#: What the API answers a user who must first enroll TOTP or change a one-time password.
RESTRICTED = frozenset({"MFA_REQUIRED", "PASSWORD_CHANGE_REQUIRED"})
#: Every console response: no inline script or style, nothing from another origin.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
}

templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
templates.globals.update(node_width=NODE_WIDTH, node_height=NODE_HEIGHT)
#: JSON shown as text (escaped like any other text).
templates.filters["pretty"] = lambda value: json.dumps(value, indent=2, sort_keys=True, default=str)
templates.filters["duration"] = format_duration


async def console_headers(message: Message, scope: Scope) -> None:
    """`before_send` hook: the security headers on every `/ui` response (errors too)."""
    if message["type"] != "http.response.start":
        return
    path = str(scope.get("path", ""))
    if path == "/ui" or path.startswith("/ui/") or (path == "/" and _is_redirect(message)):
        headers = [
            (k, v)
            for k, v in message.get("headers", [])
            if k.decode().lower() not in SECURITY_HEADERS
        ]
        headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
        if not path.startswith("/ui/static/"):
            headers.append((b"cache-control", b"no-store"))
        message["headers"] = headers  # type: ignore[typeddict-unknown-key]


def _is_redirect(message: Message) -> bool:
    return int(message.get("status", 200)) in (302, 303, 307)  # type: ignore[call-overload]


# -- rendering -------------------------------------------------------------------------------


def page(
    name: str, status: int = 200, cookies: list[Cookie] | None = None, **context: Any
) -> Response[str]:
    return Response(
        templates.get_template(name).render(**context),
        status_code=status,
        media_type="text/html",
        cookies=cookies or [],
    )


@dataclass
class Session:
    """A signed-in browser: its token, who it is, and the API as it sees it."""

    token: str
    principal: Principal
    api: Api
    security: Security
    client: tuple[str, int] | None
    #: Cookies to set on the answer (after a refresh).
    cookies: list[Cookie] = field(default_factory=list)

    @property
    def csrf(self) -> str:
        return self.security.gate.csrf_token(self.principal.session_id)

    async def allows(self, action: str, resource: str, method: str = "POST") -> bool:
        context = {"ip": self.client[0] if self.client else None, "method": method}
        return await self.security.gate.allows(self.principal, action, resource, context)

    def render(self, name: str, status: int = 200, **context: Any) -> Response[str]:
        return page(
            name,
            status,
            self.cookies,
            user=self.principal,
            csrf=self.csrf,
            csrf_field=CSRF_FIELD,
            **context,
        )

    def redirect(self, target: str) -> Response[Any]:
        """A 303 to `target`, carrying the new pair when this request renewed the
        session (without it the browser would present the spent refresh token next)."""
        return Redirect(target, status_code=303, cookies=self.cookies)

    def failure(self, reply: Reply) -> Response[Any]:
        """The page for an API refusal or error (a lapsed session goes to the login)."""
        if reply.status == 401:
            return forget_session(Redirect("/ui/login", status_code=303))
        if reply.code in RESTRICTED:
            return self.redirect("/ui/account")
        return self.render(
            "error.html",
            reply.status,
            title=f"Error {reply.status}",
            error=reply.error,
            code=reply.code,
        )


def _client(request: Request[Any, Any, Any] | WebSocket[Any, Any, Any]) -> tuple[str, int] | None:
    client = request.scope.get("client")
    return (str(client[0]), int(client[1])) if client else None


async def _principal(security: Security, token: str) -> Principal | None:
    try:
        return await security.gate.authenticate(f"Bearer {token}")
    except DomainError:
        return None


#: Where a request keeps the session it opened: a handler and the helper it calls may
#: both ask, and a second renewal would present the refresh token its first one spent
#: (a reuse, which ends the whole session).
_OPENED = "provisioning_console_session"
_RENEWALS = Renewals()


async def open_session(request: Request[Any, Any, Any]) -> Session | None:
    """The request's session from its cookie, renewed once with the refresh cookie when
    its access token has expired; None when there is none (then: the login page). Asked
    again in the same request, the same answer."""
    if _OPENED in request.scope:
        opened: Session | None = request.scope[_OPENED]  # type: ignore[literal-required]
        return opened
    session = await _open_session(request)
    request.scope[_OPENED] = session  # type: ignore[literal-required]
    return session


async def _open_session(request: Request[Any, Any, Any]) -> Session | None:
    security: Security = request.app.state.security
    token = request.cookies.get(SESSION_COOKIE)
    principal = await _principal(security, token) if token else None
    cookies: list[Cookie] = []
    if principal is None:
        refresh = request.cookies.get(REFRESH_COOKIE)
        if not refresh:
            return None
        center = ControlCenter(request.app, _client(request))
        answer = await _RENEWALS.renew(center, token or "", refresh)
        if not answer.ok:
            return None
        token = str(answer.data["token"])
        principal = await _principal(security, token)
        if principal is None:
            return None
        cookies = session_cookies(request, answer.data)
    assert token is not None
    client = _client(request)
    return Session(token, principal, Api(request.app, token, client), security, client, cookies)


def to_login(request: Request[Any, Any, Any]) -> Response[Any]:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return forget_session(Redirect(f"/ui/login?next={quote(target)}", status_code=303))


async def _form(request: Request[Any, Any, Any]) -> Mapping[str, str]:
    form = await request.form()
    return {k: str(v) for k, v in form.items() if isinstance(v, str)}


def _safe_next(target: str | None) -> str:
    """Only a console path (never another site: `//evil`, `/\\evil`)."""
    if target and target.startswith("/ui") and not target.startswith(("//", "/\\")):
        return target
    return "/ui/workflows"


# -- the root and login ------------------------------------------------------------------------


@get("/", opt={OWN_ACCESS: True}, include_in_schema=False)
async def root(request: Request[Any, Any, Any]) -> Response[Any]:
    """A browser asking for `/` goes to the console; an API client gets the 404 it
    always got."""
    if "text/html" in request.headers.get("accept", ""):
        return Redirect("/ui/", status_code=302)
    raise NotFoundException()


@get("/ui", opt={OWN_ACCESS: True}, include_in_schema=False)
async def home() -> Response[Any]:
    return Redirect("/ui/workflows", status_code=302)


@get("/ui/login", opt={OWN_ACCESS: True}, include_in_schema=False)
async def login_page(request: Request[Any, Any, Any]) -> Response[Any]:
    return page("login.html", next=_safe_next(request.query_params.get("next")), step="password")


@post("/ui/login", opt={OWN_ACCESS: True}, include_in_schema=False, status_code=303)
async def login(request: Request[Any, Any, Any]) -> Response[Any]:
    """Log in through the control center's `POST /auth/login`. A refusal without a code
    asks for one (the answer never says which factor was wrong, so the code step is
    offered whenever the password step fails); the password is typed again, never
    written back into the page."""
    if foreign_origin(request.headers.get("origin"), request.headers.get("host")):
        # No session yet, so no CSRF token: a login posted by another site's page (to
        # sign the browser into the attacker's account) is refused by its Origin.
        return page(
            "login.html",
            403,
            next="/ui/workflows",
            step="password",
            error="Sign in from this server's own login page.",
        )
    form = await _form(request)
    target = _safe_next(form.get("next"))
    username = form.get("username", "").strip()
    code = form.get("code", "").strip() or None
    if not username or not form.get("password"):
        return page(
            "login.html",
            400,
            next=target,
            username=username,
            step="password",
            error="Enter your username and password.",
        )
    answer = await ControlCenter(request.app, _client(request)).login(
        username, form.get("password", ""), code
    )
    if not answer.ok:
        step = "code" if answer.status == 401 and code is None else form.get("step", "password")
        message = answer.error
        if step == "code" and code is None:
            message = (
                "If your account uses two-factor authentication, enter your password and a code."
            )
        return page(
            "login.html",
            answer.status if answer.status != 200 else 400,
            next=target,
            username=username,
            step=step,
            error=message,
        )
    restricted = bool(answer.data.get("restrictions"))
    response: Response[Any] = Redirect("/ui/account" if restricted else target, status_code=303)
    for cookie in session_cookies(request, answer.data):
        response.set_cookie(cookie)
    return response


def foreign_origin(origin: str | None, host: str | None) -> bool:
    """Whether a request's `Origin` names another site (a request without one, from an
    older browser or a script, is judged by its CSRF token alone)."""
    if origin is None:
        return False
    return not host or origin not in (f"http://{host}", f"https://{host}")


def csrf_ok(request: Request[Any, Any, Any], session: Session, form: Mapping[str, str]) -> bool:
    presented = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
    return csrf_valid(session.csrf, presented)


def csrf_refused(session: Session) -> Response[Any]:
    return session.render(
        "error.html",
        403,
        title="Refused",
        code="CSRF",
        error="This form is out of date or did not come from the console: reload the page "
        "and try again.",
    )


@post("/ui/logout", opt={OWN_ACCESS: True}, include_in_schema=False, status_code=303)
async def logout(request: Request[Any, Any, Any]) -> Response[Any]:
    session = await open_session(request)
    if session is None:
        return forget_session(Redirect("/ui/login", status_code=303))
    if not csrf_ok(request, session, await _form(request)):
        return csrf_refused(session)
    await ControlCenter(request.app, _client(request)).logout(session.token)
    return forget_session(Redirect("/ui/login", status_code=303))


# -- the account: TOTP enrollment and the password -------------------------------------------


def _account(session: Session, status: int = 200, **context: Any) -> Response[Any]:
    return session.render(
        "account.html",
        status,
        title="Your account",
        mfa_pending=session.principal.mfa_pending,
        must_change_password=session.principal.must_change_password,
        **context,
    )


@get("/ui/account", opt={OWN_ACCESS: True}, include_in_schema=False)
async def account(request: Request[Any, Any, Any]) -> Response[Any]:
    session = await open_session(request)
    if session is None:
        return to_login(request)
    return _account(session, notice=request.query_params.get("notice"))


async def posted_form(
    request: Request[Any, Any, Any],
) -> tuple[Session, Mapping[str, str]] | Response[Any]:
    """The session of a posted form with a valid CSRF token, and the form; else the
    answer to give (the login, a CSRF refusal)."""
    session = await open_session(request)
    if session is None:
        return to_login(request)
    form = await _form(request)
    if not csrf_ok(request, session, form):
        return csrf_refused(session)
    return session, form


@post("/ui/account/mfa/enroll", opt={OWN_ACCESS: True}, include_in_schema=False, status_code=200)
async def mfa_enroll(request: Request[Any, Any, Any]) -> Response[Any]:
    """`POST /auth/mfa/enroll`: the secret and its QR code, shown on this answer only."""
    opened = await posted_form(request)
    if isinstance(opened, Response):
        return opened
    session, _ = opened
    answer = await ControlCenter(request.app, _client(request)).enroll_mfa(session.token)
    if not answer.ok:
        return _account(session, answer.status, error=answer.error)
    uri = str(answer.data["otpauth_uri"])
    qr = segno.make(uri, error="m").svg_data_uri(scale=5, dark="#000", light="#fff")
    return _account(session, enrollment={"secret": answer.data["secret"], "uri": uri, "qr": qr})


@post("/ui/account/mfa/verify", opt={OWN_ACCESS: True}, include_in_schema=False, status_code=200)
async def mfa_verify(request: Request[Any, Any, Any]) -> Response[Any]:
    """`POST /auth/mfa/verify`: the backup codes, shown on this answer only."""
    opened = await posted_form(request)
    if isinstance(opened, Response):
        return opened
    session, form = opened
    code = form.get("code", "").strip()
    answer = await ControlCenter(request.app, _client(request)).verify_mfa(session.token, code)
    if not answer.ok:
        return _account(session, answer.status, error=answer.error)
    # The same token, read again: its principal no longer has MFA pending.
    principal = await _principal(session.security, session.token)
    refreshed = session if principal is None else replace(session, principal=principal)
    return _account(refreshed, backup_codes=answer.data["backup_codes"])


@post("/ui/account/password", opt={OWN_ACCESS: True}, include_in_schema=False, status_code=303)
async def change_password(request: Request[Any, Any, Any]) -> Response[Any]:
    """`PUT /user/password` (every other session of the user ends; this one goes on)."""
    opened = await posted_form(request)
    if isinstance(opened, Response):
        return opened
    session, form = opened
    answer = await ControlCenter(request.app, _client(request)).change_password(
        session.token,
        form.get("current_password", ""),
        form.get("new_password", ""),
        form.get("confirm_new_password", ""),
    )
    if not answer.ok:
        return _account(session, answer.status, error=answer.error)
    return session.redirect(f"/ui/account?{urlencode({'notice': answer.data})}")


# -- one's API keys ----------------------------------------------------------------------------


async def _api_keys_page(
    request: Request[Any, Any, Any], session: Session, status: int = 200, **context: Any
) -> Response[Any]:
    """The caller's API keys (`GET /api-keys`) and the form that makes one."""
    listed = await ControlCenter(request.app, _client(request)).api_keys(session.token)
    if listed.status == 403 and listed.body.get("code") in RESTRICTED:
        return session.redirect("/ui/account")
    if not listed.ok:
        context.setdefault("error", listed.error)
    return session.render(
        "api_keys.html",
        status,
        title="API keys",
        keys=listed.data if listed.ok else [],
        notice=request.query_params.get("notice"),
        **context,
    )


@get("/ui/account/api-keys", opt={OWN_ACCESS: True}, include_in_schema=False)
async def api_keys(request: Request[Any, Any, Any]) -> Response[Any]:
    session = await open_session(request)
    if session is None:
        return to_login(request)
    return await _api_keys_page(request, session)


@post("/ui/account/api-keys", opt={OWN_ACCESS: True}, include_in_schema=False, status_code=200)
async def create_api_key(request: Request[Any, Any, Any]) -> Response[Any]:
    """`POST /api-keys`: the key is shown on this answer only (never in a URL)."""
    opened = await posted_form(request)
    if isinstance(opened, Response):
        return opened
    session, form = opened
    body: dict[str, Any] = {
        "name": form.get("name", "").strip(),
        "description": form.get("description", "").strip(),
    }
    days = form.get("expires_in_days", "").strip()
    if days:
        if not days.isdigit():
            return await _api_keys_page(
                request, session, 422, error="Expires in: a whole number of days"
            )
        body["expires_in_days"] = int(days)
    answer = await ControlCenter(request.app, _client(request)).create_api_key(session.token, body)
    if not answer.ok:
        return await _api_keys_page(request, session, answer.status, error=answer.error)
    return await _api_keys_page(request, session, 201, created=answer.data)


@post(
    "/ui/account/api-keys/{key_id:str}/revoke",
    opt={OWN_ACCESS: True},
    include_in_schema=False,
    status_code=303,
)
async def revoke_api_key(request: Request[Any, Any, Any], key_id: str) -> Response[Any]:
    opened = await posted_form(request)
    if isinstance(opened, Response):
        return opened
    session, _ = opened
    answer = await ControlCenter(request.app, _client(request)).revoke_api_key(
        session.token, key_id
    )
    if not answer.ok:
        return await _api_keys_page(request, session, answer.status, error=answer.error)
    return session.redirect(f"/ui/account/api-keys?{urlencode({'notice': answer.data})}")


def page_count(total: int, size: int = PAGE_SIZE) -> int:
    """How many pages `total` items take (one at least: an empty listing is a page)."""
    return max(1, -(-total // size))


def page_links(number: int, pages: int, link: Callable[[int], str]) -> dict[str, Any]:
    """What `pager.html` shows: page `number` of `pages`, and the links (`link(n)`) to
    the pages before and after it, where there are such."""
    return {
        "page": number,
        "pages": pages,
        "previous": link(number - 1) if number > 1 else None,
        "next": link(number + 1) if number < pages else None,
    }


def page_number(request: Request[Any, Any, Any]) -> int:
    try:
        return max(1, int(request.query_params.get("page") or 1))
    except ValueError:
        return 1


# -- workflows ---------------------------------------------------------------------------------


@get("/ui/workflows", opt={OWN_ACCESS: True}, include_in_schema=False)
async def workflows(request: Request[Any, Any, Any]) -> Response[Any]:
    session = await open_session(request)
    if session is None:
        return to_login(request)
    query = request.query_params
    status = query.get("status") or ""
    kind = (query.get("kind") or "").strip()
    number = page_number(request)
    if status and status not in WORKFLOW_STATUSES_ALL:
        status = ""
    orchestrator: Orchestrator = request.app.state.orchestrator
    since = await orchestrator.records.last_seq()  # the page follows the log from here
    reply = await session.api.get(
        "/workflows", status=status, kind=kind, limit=PAGE_SIZE, offset=(number - 1) * PAGE_SIZE
    )
    if not reply.ok:
        return session.failure(reply)
    total = reply.total
    pages = page_count(total)

    def link(to: int) -> str:
        return "/ui/workflows?" + urlencode(
            {k: v for k, v in {"status": status, "kind": kind, "page": to}.items() if v}
        )

    return session.render(
        "workflows.html",
        title="Workflows",
        workflows=reply.data or [],
        statuses=WORKFLOW_STATUSES_ALL,
        selected_status=status,
        kind=kind,
        **page_links(number, pages, link),
        total=total,
        first_page=link(1),
        since=since,
    )


async def _tasks_of(api: Api, workflow_id: str) -> Reply | list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    while len(found) < MAX_TASKS:
        reply = await api.get("/tasks", workflow_id=workflow_id, limit=1000, offset=len(found))
        if not reply.ok:
            return reply
        batch = reply.data or []
        found += batch
        if len(batch) < 1000 or len(found) >= reply.total:
            break
    return found


@get("/ui/workflows/{workflow_id:str}", opt={OWN_ACCESS: True}, include_in_schema=False)
async def workflow(request: Request[Any, Any, Any], workflow_id: str) -> Response[Any]:
    session = await open_session(request)
    if session is None:
        return to_login(request)
    orchestrator: Orchestrator = request.app.state.orchestrator
    # The log's head before the reads: the page's stream resumes from here, so nothing
    # that happens between this render and the socket's opening is missed.
    since = await orchestrator.records.last_seq()
    reply = await session.api.get(f"/workflows/{quote(workflow_id, safe='')}")
    if not reply.ok:
        return session.failure(reply)
    tasks = await _tasks_of(session.api, workflow_id)
    if isinstance(tasks, Reply):
        return session.failure(tasks)
    flow = reply.data
    panel = await _progress_of(session.api, flow)
    if isinstance(panel, Reply):
        return session.failure(panel)
    resource = f"workflows:{workflow_id}"
    can_cancel = await session.allows("cancel", resource)
    can_rollback = flow["kind"] == "batch" and await session.allows("execute", "rollback:*")
    return session.render(
        "workflow.html",
        title=flow["name"] or workflow_id,
        workflow=flow,
        graph=layout(tasks),
        since=since,
        final=flow["status"] in FINAL,
        can_cancel=can_cancel,
        can_rollback=can_rollback,
        notice=request.query_params.get("notice"),
        **panel,
    )


async def _progress_of(api: Api, flow: dict[str, Any]) -> Reply | dict[str, Any]:
    """What the progress panel shows: the workflow's progress and ETA, and for a batch
    its operations."""
    ident = quote(str(flow["id"]), safe="")
    progress = await api.get(f"/state/workflows/{ident}/progress")
    if not progress.ok:
        return progress
    operations: list[dict[str, Any]] = []
    if flow["kind"] == "batch":
        batch = await api.get(f"/batch/operations/{ident}")
        if not batch.ok:
            return batch
        operations = batch.data.get("operations", [])
    return {"progress": progress.data, "operations": operations}


@get("/ui/workflows/{workflow_id:str}/progress", opt={OWN_ACCESS: True}, include_in_schema=False)
async def workflow_progress(request: Request[Any, Any, Any], workflow_id: str) -> Response[Any]:
    """The progress panel alone, for the page to replace as the workflow's events come."""
    session = await open_session(request)
    if session is None:
        return to_login(request)
    reply = await session.api.get(f"/workflows/{quote(workflow_id, safe='')}")
    if not reply.ok:
        return session.failure(reply)
    panel = await _progress_of(session.api, reply.data)
    if isinstance(panel, Reply):
        return session.failure(panel)
    return session.render("progress_panel.html", **panel)


# -- the event log ---------------------------------------------------------------------------

#: How many past events the events page starts with, and how many rows it keeps.
EVENTS_BACKLOG = 100
EVENTS_KEPT = 500
_EVENT_TYPES = re.compile(r"^[A-Za-z]+(,[A-Za-z]+)*$")


@get("/ui/events", opt={OWN_ACCESS: True}, include_in_schema=False)
async def events(request: Request[Any, Any, Any]) -> Response[Any]:
    """The event log, live: the page follows `/ui/ws` from a little before the log's head,
    with the filters the stream itself applies (types, workflow)."""
    session = await open_session(request)
    if session is None:
        return to_login(request)
    if not await session.allows("read", "events:*", method="GET"):
        return session.failure(
            Reply(
                403,
                {"error": "your policies do not let you read the event log", "code": "FORBIDDEN"},
            )
        )
    query = request.query_params
    event_types = (query.get("event_types") or "").replace(" ", "")
    if event_types and not _EVENT_TYPES.match(event_types):
        event_types = ""
    workflow_id = (query.get("workflow_id") or "").strip()[:64]
    orchestrator: Orchestrator = request.app.state.orchestrator
    head = await orchestrator.records.last_seq()
    return session.render(
        "events.html",
        title="Events",
        since=max(0, head - EVENTS_BACKLOG),
        event_types=event_types,
        workflow_id=workflow_id,
        known_types=EVENT_TYPES,
        backlog=EVENTS_BACKLOG,
        keep=EVENTS_KEPT,
    )


# -- metrics -------------------------------------------------------------------------------


@get("/ui/metrics", opt={OWN_ACCESS: True}, include_in_schema=False)
async def metrics(request: Request[Any, Any, Any]) -> Response[Any]:
    """Small charts of the essentials: running and queued tasks, tasks ended per second,
    task durations. The page samples `/ui/metrics/sample` every 2 seconds."""
    session = await open_session(request)
    if session is None:
        return to_login(request)
    first = await _metrics_sample(session.api)
    if isinstance(first, Reply):
        return session.failure(first)
    return session.render("metrics.html", title="Metrics", sample=first)


@get("/ui/metrics/sample", opt={OWN_ACCESS: True}, include_in_schema=False)
async def metrics_sample(request: Request[Any, Any, Any]) -> Response[Any]:
    session = await open_session(request)
    if session is None:
        return forget_session(no_session())
    sample = await _metrics_sample(session.api)
    if isinstance(sample, Reply):
        return error_response(sample.status, sample.code or "UNAVAILABLE", sample.error)
    return Response(sample, cookies=session.cookies)


async def _metrics_sample(api: Api) -> Reply | dict[str, Any]:
    """One reading: the scheduler's gauges (`GET /state/system/metrics`) and, from
    `GET /metrics`, the tasks ended so far and the task-duration histogram's buckets
    (cumulative: the page charts the difference between two readings)."""
    system = await api.get("/state/system/metrics")
    if not system.ok:
        return system
    status, text = await api.text("/metrics")
    if status != 200:
        return Reply(status, {"error": f"/metrics answered {status}"})
    ended = 0.0
    buckets: list[tuple[float, float]] = []
    duration_sum = duration_count = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == "orchestrator_tasks":
            ended = sum(s.value for s in family.samples if s.name.endswith("_total"))
        elif family.name == "orchestrator_task_duration_seconds":
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    buckets.append((float(sample.labels["le"]), sample.value))
                elif sample.name.endswith("_sum"):
                    duration_sum = sample.value
                elif sample.name.endswith("_count"):
                    duration_count = sample.value
    data = system.data
    return {
        "at": utcnow().isoformat(),
        "running": data["running_tasks"],
        "queued": data["queued_tasks"],
        "active_workflows": data["active_workflows"],
        "tasks_ended": ended,
        "durations": {
            "buckets": [[le if le != float("inf") else None, n] for le, n in buckets],
            "sum": duration_sum,
            "count": duration_count,
        },
    }


# -- the session, kept alive -----------------------------------------------------------------


@get("/ui/session", opt={OWN_ACCESS: True}, include_in_schema=False)
async def session_alive(request: Request[Any, Any, Any]) -> Response[Any]:
    """204 with the session renewed if its access token lapsed (the page calls it now
    and then, and before its stream reconnects), 401 when there is none: a page left
    open keeps its session without a reload."""
    session = await open_session(request)
    if session is None:
        return forget_session(no_session())
    return Response(None, status_code=204, cookies=session.cookies)


def no_session() -> Response[Any]:
    return error_response(401, "UNAUTHORIZED", "no console session: log in at /ui/login")


async def _attempts(api: Api, task: dict[str, Any]) -> list[dict[str, Any]]:
    """The task's attempts, from its workflow's events: each start, and how it ended."""
    attempts: list[dict[str, Any]] = []
    after = 0
    for _ in range(20):
        reply = await api.get(
            f"/workflows/{quote(task['workflow_id'], safe='')}/events", after=after, limit=1000
        )
        events = reply.data or [] if reply.ok else []
        for event in events:
            if event["task_id"] != task["id"] or event["event_type"] != "TaskStatusChanged":
                continue
            data = event["data"]
            if data.get("status") == "Running":
                attempts.append(
                    {
                        "number": data.get("attempt") or len(attempts) + 1,
                        "started": event["timestamp"],
                        "ended": None,
                        "outcome": "Running",
                        "error": None,
                    }
                )
            elif attempts and attempts[-1]["ended"] is None:
                attempts[-1].update(
                    ended=event["timestamp"],
                    outcome="Retrying" if data.get("retrying") else data.get("status"),
                    error=data.get("error"),
                )
        if len(events) < 1000:
            break
        after = events[-1]["seq"]
    return attempts


@get("/ui/tasks/{task_id:str}", opt={OWN_ACCESS: True}, include_in_schema=False)
async def task(request: Request[Any, Any, Any], task_id: str) -> Response[Any]:
    """A task's detail: the whole page, or (`?fragment=1`) the panel the DAG page shows."""
    session = await open_session(request)
    if session is None:
        return to_login(request)
    reply = await session.api.get(f"/tasks/{quote(task_id, safe='')}")
    if not reply.ok:
        return session.failure(reply)
    detail = reply.data
    attempts = await _attempts(session.api, detail) if detail.get("kind") == "task" else []
    name = "task_panel.html" if request.query_params.get("fragment") else "task.html"
    return session.render(name, title=detail["name"], task=detail, attempts=attempts)


async def _act(
    request: Request[Any, Any, Any], back: str, call: str, body: Any, done: str
) -> Response[Any]:
    """Post `body` to the API's `call` for a checked form; then show `back` (or the
    rollback workflow the call started) with the API's message."""
    session = await open_session(request)
    if session is None:
        return to_login(request)
    if not csrf_ok(request, session, await _form(request)):
        return csrf_refused(session)
    reply = await session.api.post(call, body)
    if not reply.ok:
        return session.failure(reply)
    data = reply.data
    message = data if isinstance(data, str) else done
    if isinstance(data, dict) and _undid_nothing(data):
        # A rollback with nothing to undo is a run without tasks, ended at once.
        message = "Nothing to undo"
    elif isinstance(data, dict) and data.get("rollback_id"):
        back = f"/ui/workflows/{quote(str(data['rollback_id']), safe='')}"
    return session.redirect(f"{back}?{urlencode({'notice': message})}")


def _undid_nothing(answer: dict[str, Any]) -> bool:
    return (
        answer.get("status") == "Completed"
        and not answer.get("operations_executed")
        and not answer.get("operations_failed")
    )


@post(
    "/ui/workflows/{workflow_id:str}/cancel",
    opt={OWN_ACCESS: True},
    include_in_schema=False,
    status_code=303,
)
async def cancel(request: Request[Any, Any, Any], workflow_id: str) -> Response[Any]:
    """`POST /workflows/{id}/cancel`, as the API answers it."""
    back = f"/ui/workflows/{quote(workflow_id, safe='')}"
    call = f"/workflows/{quote(workflow_id, safe='')}/cancel"
    return await _act(request, back, call, None, "Cancel requested")


@post(
    "/ui/workflows/{workflow_id:str}/rollback",
    opt={OWN_ACCESS: True},
    include_in_schema=False,
    status_code=303,
)
async def rollback(request: Request[Any, Any, Any], workflow_id: str) -> Response[Any]:
    """`POST /rollback/execute` with the batch's operations (what `provisioning rollback
    --operation …` sends), without waiting: the page then shows the rollback's graph."""
    session = await open_session(request)
    if session is None:
        return to_login(request)
    batch = await session.api.get(f"/batch/operations/{quote(workflow_id, safe='')}")
    if not batch.ok:
        return session.failure(batch)
    operations = [op["id"] for op in batch.data.get("operations", [])]
    body = {"operation_ids": operations, "wait": False}
    back = f"/ui/workflows/{quote(workflow_id, safe='')}"
    return await _act(request, back, "/rollback/execute", body, "Rollback started")


# -- checkpoints -------------------------------------------------------------------------------


@get("/ui/checkpoints", opt={OWN_ACCESS: True}, include_in_schema=False)
async def checkpoints(request: Request[Any, Any, Any]) -> Response[Any]:
    session = await open_session(request)
    if session is None:
        return to_login(request)
    number = page_number(request)
    reply = await session.api.get(
        "/rollback/checkpoints", limit=PAGE_SIZE, offset=(number - 1) * PAGE_SIZE
    )
    if not reply.ok:
        return session.failure(reply)
    pages = page_count(reply.total)
    return session.render(
        "checkpoints.html",
        title="Checkpoints",
        checkpoints=reply.data or [],
        total=reply.total,
        **page_links(number, pages, lambda n: f"/ui/checkpoints?page={n}"),
    )


@get("/ui/checkpoints/{checkpoint_id:str}", opt={OWN_ACCESS: True}, include_in_schema=False)
async def checkpoint(request: Request[Any, Any, Any], checkpoint_id: str) -> Response[Any]:
    """A checkpoint, with what a rollback to it would undo, and the confirmation."""
    session = await open_session(request)
    if session is None:
        return to_login(request)
    reply = await session.api.get(f"/rollback/checkpoints/{quote(checkpoint_id, safe='')}")
    if not reply.ok:
        return session.failure(reply)
    return session.render(
        "checkpoint.html",
        title=reply.data["name"],
        checkpoint=reply.data,
        can_rollback=await session.allows("execute", "rollback:*"),
        notice=request.query_params.get("notice"),
    )


@post(
    "/ui/checkpoints/{checkpoint_id:str}/rollback",
    opt={OWN_ACCESS: True},
    include_in_schema=False,
    status_code=303,
)
async def rollback_to(request: Request[Any, Any, Any], checkpoint_id: str) -> Response[Any]:
    """`POST /rollback/execute` with the checkpoint, without waiting: the page then
    follows the rollback's graph."""
    back = f"/ui/checkpoints/{quote(checkpoint_id, safe='')}"
    body = {"checkpoint_id": checkpoint_id, "wait": False}
    return await _act(request, back, "/rollback/execute", body, "Rollback started")


# -- the event stream --------------------------------------------------------------------------


@websocket("/ui/ws", opt={OWN_ACCESS: True})
async def stream(socket: WebSocket[Any, Any, Any]) -> None:
    """`/ws` for the console's pages: the session cookie is the stream's credential.

    Only a same-origin page may open it (the `Origin` must name this server: a page of
    another site cannot, whatever cookies the browser holds), and it then runs `/ws`
    itself, after the same check as `?token=` (`events:read`)."""
    security: Security = socket.app.state.security
    token = socket.cookies.get(SESSION_COOKIE)
    origin = socket.headers.get("origin")
    if not token or origin is None or foreign_origin(origin, socket.headers.get("host")):
        await socket.close(code=1008, reason="a console page of this server only")
        return
    access = access_of(socket.scope)
    access.action, access.resource = "events:read", "events:*"
    try:
        await security.check(socket.scope, f"Bearer {token}", "read", ("GET", "/ws"))
    except DomainError as exc:
        await socket.close(code=1008, reason=exc.code)
        return
    await event_stream.fn(socket)


def console_router() -> Router:
    static = create_static_files_router(
        path="/ui/static", directories=[HERE / "static"], opt={OWN_ACCESS: True}, name="ui-static"
    )
    return Router(
        path="/",
        route_handlers=[
            root,
            home,
            login_page,
            login,
            logout,
            account,
            mfa_enroll,
            mfa_verify,
            change_password,
            api_keys,
            create_api_key,
            revoke_api_key,
            workflows,
            workflow,
            workflow_progress,
            events,
            metrics,
            metrics_sample,
            session_alive,
            task,
            cancel,
            rollback,
            checkpoints,
            checkpoint,
            rollback_to,
            stream,
            static,
        ],
        opt={OWN_ACCESS: True},
        include_in_schema=False,
    )
