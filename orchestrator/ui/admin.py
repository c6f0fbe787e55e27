"""The console's admin pages (docs/ui.md): users, API keys, policies, the audit log.

Like every console page they read and act through the public API in process (the
control center's `/users`, `/api-keys`, `/policies` and `/audit/logs`, which the
orchestrator mounts: `control_center.gate.account_routes`), so the policies decide: a
user the API refuses gets its refusal as the page, a user it lets read sees the page
without the buttons its policies would refuse, and a forced form gets the API's 403.
Every form carries the session's CSRF token. A one-time password the console makes for
a new user, or for a reset, is shown on that answer only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from litestar import Request, Response, Router, get, post
from litestar.types import ControllerRouterHandler

from control_center.gate import one_time_password
from orchestrator.api.security import OWN_ACCESS
from orchestrator.http.errors import error_response
from orchestrator.service import Orchestrator
from orchestrator.ui.api import Reply
from orchestrator.ui.routes import (
    PAGE_SIZE,
    RESTRICTED,
    Session,
    csrf_ok,
    csrf_refused,
    no_session,
    open_session,
    page_count,
    page_links,
    page_number,
    to_login,
)
from orchestrator.ui.session import CSRF_HEADER, csrf_valid, forget_session

#: The roles the default policies know (docs/security.md); others can be typed.
ROLES = ("admin", "operator", "viewer", "member")
#: The most users a page's user list (a filter, usernames in the audit log) reads.
MAX_USERS = 1000
AUDIT_PAGE = 50

_OPT = {OWN_ACCESS: True}

AnyRequest = Request[Any, Any, Any]


def _quoted(value: str) -> str:
    return quote(value, safe="")


def _refusal(reply: Reply) -> bool:
    """An answer the page cannot show in its form: no session, a restriction, a 403."""
    return reply.status in (401, 403) or reply.code in RESTRICTED


async def _checked(request: AnyRequest) -> tuple[Session, Any] | Response[Any]:
    """The session and the posted form (every value of each field), or the answer
    (the login, a CSRF refusal)."""
    session = await open_session(request)
    if session is None:
        return to_login(request)
    form = await request.form()
    flat = {k: str(v) for k, v in form.items() if isinstance(v, str)}
    if not csrf_ok(request, session, flat):
        return csrf_refused(session)
    return session, form


def _text(form: Any, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _words(text: str) -> list[str]:
    """Globs or roles typed in one field: separated by commas, spaces or lines."""
    return [word for word in text.replace(",", " ").split() if word]


def _min_length(request: AnyRequest) -> int:
    orchestrator: Orchestrator = request.app.state.orchestrator
    return orchestrator.settings.auth.min_password_length


async def _usernames(session: Session) -> dict[str, str]:
    """User id → username, as far as the caller may list users (else empty)."""
    reply = await session.api.get("/users", limit=MAX_USERS)
    return {u["id"]: u["username"] for u in reply.data or []} if reply.ok else {}


# -- users ---------------------------------------------------------------------------------


@get("/ui/admin/users", opt=_OPT, include_in_schema=False)
async def users(request: AnyRequest) -> Response[Any]:
    session = await open_session(request)
    if session is None:
        return to_login(request)
    return await _users_page(request, session)


async def _users_page(
    request: AnyRequest, session: Session, status: int = 200, **context: Any
) -> Response[Any]:
    """`GET /users`, filtered by role and state, paged; and the form that makes one."""
    query = request.query_params
    role = (query.get("role") or "").strip()[:100]
    enabled = query.get("enabled") or ""
    if enabled not in ("true", "false"):
        enabled = ""
    number = page_number(request)
    reply = await session.api.get(
        "/users", role=role, enabled=enabled, limit=PAGE_SIZE, offset=(number - 1) * PAGE_SIZE
    )
    if not reply.ok:
        return session.failure(reply)
    pages = page_count(reply.total)

    def link(to: int) -> str:
        kept = {"role": role, "enabled": enabled, "page": to if to > 1 else ""}
        return "/ui/admin/users?" + urlencode({k: v for k, v in kept.items() if v})

    context.setdefault("draft", {"roles": ["viewer"]})
    return session.render(
        "admin_users.html",
        status,
        title="Users",
        users=reply.data or [],
        total=reply.total,
        role=role,
        enabled=enabled,
        roles=ROLES,
        **page_links(number, pages, link),
        can_create=await session.allows("create", "users:*"),
        notice=request.query_params.get("notice"),
        **context,
    )


def _roles_of(form: Any) -> list[str]:
    chosen = [r for r in form.getall("role", []) if isinstance(r, str) and r]
    return list(dict.fromkeys([*chosen, *_words(_text(form, "other_roles"))]))


@post("/ui/admin/users", opt=_OPT, include_in_schema=False, status_code=200)
async def create_user(request: AnyRequest) -> Response[Any]:
    """`POST /users` with a one-time password the console makes (the user changes it at
    the first login): shown on this answer only."""
    opened = await _checked(request)
    if isinstance(opened, Response):
        return opened
    session, form = opened
    draft = {
        "username": _text(form, "username"),
        "email": _text(form, "email"),
        "roles": _roles_of(form),
    }
    password = one_time_password(_min_length(request))
    body = {**draft, "password": password, "must_change_password": True}
    reply = await session.api.post("/users", body)
    if _refusal(reply):
        return session.failure(reply)
    if not reply.ok:
        return await _users_page(request, session, reply.status, error=reply.error, draft=draft)
    made = {"user": reply.data, "password": password}
    return await _users_page(request, session, 201, created=made)


@get("/ui/admin/users/{user_id:str}", opt=_OPT, include_in_schema=False)
async def user(request: AnyRequest, user_id: str) -> Response[Any]:
    session = await open_session(request)
    if session is None:
        return to_login(request)
    return await _user_page(request, session, user_id)


async def _user_page(
    request: AnyRequest, session: Session, user_id: str, status: int = 200, **context: Any
) -> Response[Any]:
    """A user (`GET /users/{id}`), its API keys, and the forms that change it."""
    reply = await session.api.get(f"/users/{_quoted(user_id)}")
    if not reply.ok:
        return session.failure(reply)
    keys = await session.api.get("/api-keys", user_id=user_id, limit=200)
    resource = f"users:{user_id}"
    context.setdefault("notice", request.query_params.get("notice"))
    return session.render(
        "admin_user.html",
        status,
        title=reply.data["username"],
        account=reply.data,
        roles=ROLES,
        keys=keys.data if keys.ok else None,
        keys_error=None if keys.ok else keys.error,
        can_update=await session.allows("update", resource, method="PUT"),
        can_delete=await session.allows("delete", resource, method="DELETE"),
        own=user_id == session.principal.user_id,
        **context,
    )


async def _change_user(
    request: AnyRequest, user_id: str, body_of: Callable[[Any], dict[str, Any]], **shown: Any
) -> Response[Any]:
    """`PUT /users/{id}` with what `body_of` makes of the form, then the user's page
    (with `shown` on this answer only, or with the API's message in the URL)."""
    opened = await _checked(request)
    if isinstance(opened, Response):
        return opened
    session, form = opened
    body = body_of(form)
    reply = await session.api.call("PUT", f"/users/{_quoted(user_id)}", json=body)
    if _refusal(reply):
        return session.failure(reply)
    if not reply.ok:
        return await _user_page(request, session, user_id, reply.status, error=reply.error)
    if shown:
        return await _user_page(request, session, user_id, notice=reply.data, **shown)
    back = f"/ui/admin/users/{_quoted(user_id)}"
    return session.redirect(f"{back}?{urlencode({'notice': reply.data})}")


@post("/ui/admin/users/{user_id:str}/roles", opt=_OPT, include_in_schema=False, status_code=303)
async def change_roles(request: AnyRequest, user_id: str) -> Response[Any]:
    return await _change_user(request, user_id, lambda form: {"roles": _roles_of(form)})


@post("/ui/admin/users/{user_id:str}/enabled", opt=_OPT, include_in_schema=False, status_code=303)
async def enable_user(request: AnyRequest, user_id: str) -> Response[Any]:
    """Disable (every session and key of the user stops at once) or enable again."""
    return await _change_user(
        request, user_id, lambda form: {"enabled": _text(form, "enabled") == "true"}
    )


@post("/ui/admin/users/{user_id:str}/password", opt=_OPT, include_in_schema=False, status_code=200)
async def reset_password(request: AnyRequest, user_id: str) -> Response[Any]:
    """A new one-time password (the user changes it at the next login; every session of
    theirs ends): shown on this answer only."""
    password = one_time_password(_min_length(request))
    body = {"password": password, "must_change_password": True}
    return await _change_user(request, user_id, lambda _: body, reset_password=password)


@post("/ui/admin/users/{user_id:str}/delete", opt=_OPT, include_in_schema=False, status_code=303)
async def delete_user(request: AnyRequest, user_id: str) -> Response[Any]:
    opened = await _checked(request)
    if isinstance(opened, Response):
        return opened
    session, _ = opened
    reply = await session.api.call("DELETE", f"/users/{_quoted(user_id)}")
    if _refusal(reply):
        return session.failure(reply)
    if not reply.ok:
        return await _user_page(request, session, user_id, reply.status, error=reply.error)
    return session.redirect(f"/ui/admin/users?{urlencode({'notice': reply.data})}")


# -- API keys ------------------------------------------------------------------------------


@get("/ui/admin/api-keys", opt=_OPT, include_in_schema=False)
async def api_keys(request: AnyRequest) -> Response[Any]:
    """A user's API keys, revoked ones too (`GET /api-keys?user_id=…`: the API lists
    one owner's keys at a time), the user chosen from the list of users."""
    session = await open_session(request)
    if session is None:
        return to_login(request)
    listed = await session.api.get("/users", limit=MAX_USERS)
    if not listed.ok:
        return session.failure(listed)
    chosen = (request.query_params.get("user_id") or "").strip()
    keys: list[dict[str, Any]] | None = None
    if chosen:
        reply = await session.api.get(
            "/api-keys", user_id=chosen, include_revoked="true", limit=1000
        )
        if not reply.ok:
            return session.failure(reply)
        keys = reply.data or []
    return session.render(
        "admin_api_keys.html",
        title="API keys",
        users=listed.data or [],
        chosen=chosen,
        keys=keys,
        notice=request.query_params.get("notice"),
    )


@post("/ui/admin/api-keys/{key_id:str}/revoke", opt=_OPT, include_in_schema=False, status_code=303)
async def revoke_api_key(request: AnyRequest, key_id: str) -> Response[Any]:
    """`DELETE /api-keys/{id}` (the policies let administrators revoke anyone's)."""
    opened = await _checked(request)
    if isinstance(opened, Response):
        return opened
    session, form = opened
    reply = await session.api.call("DELETE", f"/api-keys/{_quoted(key_id)}")
    if not reply.ok:
        return session.failure(reply)
    query = {"user_id": _text(form, "user_id"), "notice": reply.data}
    return session.redirect(f"/ui/admin/api-keys?{urlencode(query)}")


# -- policies ------------------------------------------------------------------------------


@get("/ui/admin/policies", opt=_OPT, include_in_schema=False)
async def policies(request: AnyRequest) -> Response[Any]:
    session = await open_session(request)
    if session is None:
        return to_login(request)
    number = page_number(request)
    reply = await session.api.get("/policies", limit=PAGE_SIZE, offset=(number - 1) * PAGE_SIZE)
    if not reply.ok:
        return session.failure(reply)
    pages = page_count(reply.total)
    return session.render(
        "admin_policies.html",
        title="Policies",
        policies=reply.data or [],
        total=reply.total,
        **page_links(number, pages, lambda n: f"/ui/admin/policies?page={n}"),
        can_create=await session.allows("create", "policies:*"),
        notice=request.query_params.get("notice"),
    )


def _rule_rows(rules: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Stored rules as the form's rows (globs joined by commas)."""

    def joined(value: Any) -> str:
        return ", ".join(value) if isinstance(value, list) else str(value or "")

    return [
        {
            "effect": str(rule.get("effect") or "Allow"),
            "resource": joined(rule.get("resource")),
            "action": joined(rule.get("action", ["*"])),
            "condition": str(rule.get("condition") or ""),
            "description": str(rule.get("description") or ""),
        }
        for rule in rules
    ]


def _draft_of(form: Any) -> dict[str, Any]:
    """The policy the form describes: its fields as typed (to show again), and the rows
    of its rules (a row without resource nor condition is an empty one, left out)."""
    columns = [
        [str(v) for v in form.getall(name, [])]
        for name in ("effect", "resource", "action", "condition", "rule_description")
    ]
    rows = [
        {"effect": e, "resource": r, "action": a, "condition": c, "description": d}
        for e, r, a, c, d in zip(*columns, strict=False)
        if r.strip() or c.strip()
    ]
    return {
        "name": _text(form, "name"),
        "version": _text(form, "version") or "1.0.0",
        "description": _text(form, "description"),
        "enabled": _text(form, "enabled") == "true",
        "rows": rows,
    }


def _body_of(draft: Mapping[str, Any]) -> dict[str, Any]:
    rules = []
    for row in draft["rows"]:
        rule: dict[str, Any] = {
            "effect": row["effect"],
            "resource": _words(row["resource"]),
            "action": _words(row["action"]) or ["*"],
        }
        if row["condition"].strip():
            rule["condition"] = row["condition"]
        if row["description"].strip():
            rule["description"] = row["description"].strip()
        rules.append(rule)
    return {
        "name": draft["name"],
        "version": draft["version"],
        "description": draft["description"],
        "enabled": draft["enabled"],
        "rules": rules,
    }


def _policy_form(
    session: Session,
    status: int = 200,
    *,
    policy_id: str | None,
    draft: dict[str, Any],
    **extra: Any,
) -> Response[Any]:
    return session.render(
        "admin_policy.html",
        status,
        title=draft["name"] or "New policy",
        policy_id=policy_id,
        draft=draft,
        **extra,
    )


@get("/ui/admin/policies/new", opt=_OPT, include_in_schema=False)
async def new_policy(request: AnyRequest) -> Response[Any]:
    session = await open_session(request)
    if session is None:
        return to_login(request)
    if not await session.allows("create", "policies:*"):
        return session.failure(
            Reply(
                403, {"error": "your policies do not let you create policies", "code": "FORBIDDEN"}
            )
        )
    draft = {"name": "", "version": "1.0.0", "description": "", "enabled": True, "rows": []}
    return _policy_form(session, policy_id=None, draft=draft, can_edit=True, can_delete=False)


@post("/ui/admin/policies", opt=_OPT, include_in_schema=False, status_code=303)
async def create_policy(request: AnyRequest) -> Response[Any]:
    """`POST /policies`; a refused rule (422, naming it) shows the form again as typed."""
    opened = await _checked(request)
    if isinstance(opened, Response):
        return opened
    session, form = opened
    draft = _draft_of(form)
    reply = await session.api.post("/policies", _body_of(draft))
    if _refusal(reply):
        return session.failure(reply)
    if not reply.ok:
        return _policy_form(
            session,
            reply.status,
            policy_id=None,
            draft=draft,
            error=reply.error,
            can_edit=True,
            can_delete=False,
        )
    target = f"/ui/admin/policies/{_quoted(reply.data['id'])}"
    return session.redirect(f"{target}?{urlencode({'notice': 'Policy created'})}")


@get("/ui/admin/policies/{policy_id:str}", opt=_OPT, include_in_schema=False)
async def policy(request: AnyRequest, policy_id: str) -> Response[Any]:
    """A policy, and (for those its rules let change it) its form."""
    session = await open_session(request)
    if session is None:
        return to_login(request)
    reply = await session.api.get(f"/policies/{_quoted(policy_id)}")
    if not reply.ok:
        return session.failure(reply)
    found = reply.data
    draft = {
        "name": found["name"],
        "version": found["version"],
        "description": found["description"],
        "enabled": found["enabled"],
        "rows": _rule_rows(found["rules"]),
    }
    resource = f"policies:{policy_id}"
    return _policy_form(
        session,
        policy_id=policy_id,
        draft=draft,
        policy=found,
        can_edit=await session.allows("update", resource, method="PUT"),
        can_delete=await session.allows("delete", resource, method="DELETE"),
        notice=request.query_params.get("notice"),
    )


@post("/ui/admin/policies/{policy_id:str}", opt=_OPT, include_in_schema=False, status_code=303)
async def update_policy(request: AnyRequest, policy_id: str) -> Response[Any]:
    """`PUT /policies/{id}` with the whole form (a change applies at once)."""
    opened = await _checked(request)
    if isinstance(opened, Response):
        return opened
    session, form = opened
    draft = _draft_of(form)
    target = f"/ui/admin/policies/{_quoted(policy_id)}"
    reply = await session.api.call("PUT", target.removeprefix("/ui/admin"), json=_body_of(draft))
    if _refusal(reply):
        return session.failure(reply)
    if not reply.ok:
        return _policy_form(
            session,
            reply.status,
            policy_id=policy_id,
            draft=draft,
            error=reply.error,
            can_edit=True,
            can_delete=False,
        )
    return session.redirect(f"{target}?{urlencode({'notice': reply.data})}")


@post(
    "/ui/admin/policies/{policy_id:str}/delete",
    opt=_OPT,
    include_in_schema=False,
    status_code=303,
)
async def delete_policy(request: AnyRequest, policy_id: str) -> Response[Any]:
    opened = await _checked(request)
    if isinstance(opened, Response):
        return opened
    session, _ = opened
    reply = await session.api.call("DELETE", f"/policies/{_quoted(policy_id)}")
    if not reply.ok:
        return session.failure(reply)
    return session.redirect(f"/ui/admin/policies?{urlencode({'notice': reply.data})}")


@post("/ui/admin/policies/validate", opt=_OPT, include_in_schema=False, status_code=200)
async def validate_condition(request: AnyRequest) -> Response[Any]:
    """For the policy form's script, as the admin types: `POST /policies/validate` with
    `{"condition": …}` (JSON, `X-CSRF-Token`); its answer, or its error envelope."""
    session = await open_session(request)
    if session is None:
        return forget_session(no_session())
    if not csrf_valid(session.csrf, request.headers.get(CSRF_HEADER)):
        return error_response(403, "FORBIDDEN", "no or a wrong CSRF token: reload the page")
    try:
        sent = json.loads(await request.body())
    except ValueError:
        sent = None
    if not isinstance(sent, dict) or not isinstance(sent.get("condition"), str):
        return error_response(422, "INVALID_INPUT", 'send {"condition": "…"}')
    reply = await session.api.post("/policies/validate", {"condition": sent["condition"]})
    if not reply.ok:
        return error_response(reply.status, reply.code or "ERROR", reply.error)
    return Response(reply.data, cookies=session.cookies)


# -- the audit log -------------------------------------------------------------------------


def _moment(text: str, name: str) -> tuple[str, str | None]:
    """A `datetime-local` field (UTC) as the API's ISO 8601 with a zone; or the error."""
    if not text:
        return "", None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return "", f"{name}: a date and time such as 2026-01-31T14:00"
    if moment.tzinfo is None:
        return moment.isoformat() + "+00:00", None
    return moment.isoformat(), None


@get("/ui/admin/audit", opt=_OPT, include_in_schema=False)
async def audit(request: AnyRequest) -> Response[Any]:
    """`GET /audit/logs`, newest first, 50 a page, filtered by user, action, resource
    and time (UTC); each user shown by name."""
    session = await open_session(request)
    if session is None:
        return to_login(request)
    query = request.query_params
    filters = {
        name: (query.get(name) or "").strip()[:300]
        for name in ("user_id", "action", "resource", "from", "to")
    }
    errors = []
    since, problem = _moment(filters["from"], "From")
    errors += [problem] if problem else []
    until, problem = _moment(filters["to"], "To")
    errors += [problem] if problem else []
    number = page_number(request)
    reply = await session.api.get(
        "/audit/logs",
        user_id=filters["user_id"],
        action=filters["action"],
        resource=filters["resource"],
        **{"from": since, "to": until},
        limit=AUDIT_PAGE,
        offset=(number - 1) * AUDIT_PAGE,
    )
    if _refusal(reply):
        return session.failure(reply)
    if not reply.ok:
        errors.append(reply.error)
    names = await _usernames(session)
    pages = page_count(reply.total, AUDIT_PAGE)

    def link(to: int) -> str:
        kept = {**filters, "page": to if to > 1 else ""}
        return "/ui/admin/audit?" + urlencode({k: v for k, v in kept.items() if v})

    return session.render(
        "admin_audit.html",
        200 if reply.ok else reply.status,
        title="Audit log",
        records=(reply.data or []) if reply.ok else [],
        names=names,
        filters=filters,
        total=reply.total,
        **page_links(number, pages, link),
        errors=errors,
    )


#: The admin pages' routes (`admin_router`).
ADMIN_ROUTES: list[ControllerRouterHandler] = [
    users,
    create_user,
    user,
    change_roles,
    enable_user,
    reset_password,
    delete_user,
    api_keys,
    revoke_api_key,
    policies,
    new_policy,
    create_policy,
    validate_condition,
    policy,
    update_policy,
    delete_policy,
    audit,
]


def admin_router() -> Router:
    """The admin pages, for the orchestrator's app beside `console_router` (this module
    builds on that one's sessions)."""
    return Router(path="/", route_handlers=ADMIN_ROUTES, opt=_OPT, include_in_schema=False)
