"""The console's session: cookies the server sets, the CSRF token, and the control
center's public `/auth` API, called by the server on the browser's behalf.

A login posts the form to `/ui/login`; the orchestrator calls the control center's
`POST /auth/login` and keeps the answer in two cookies, both `HttpOnly` (no script can
read them), `SameSite=Strict` (no other site's page sends them) and `Secure` over HTTPS:
the access token (path `/`, so `/ui/ws` receives it too) and the refresh token (path
`/ui`). An expired access token is renewed with `POST /auth/refresh` on the next page;
requests that arrive together with the same lapsed pair (two tabs, a page and its
socket) share one renewal (`Renewals`): each presenting the refresh token on its own
would spend it twice, which ends the whole session as a stolen token would.

Every state-changing form and fetch carries the CSRF token (`_csrf` field or
`X-CSRF-Token` header): an HMAC, with a key only the server holds, of the session's id
(its refresh-token family: `Gatekeeper.csrf_token`), so only a page the server rendered
for this session knows it, a form stays good across renewals of the access token, and
it needs no storage.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from litestar import Request, Response
from litestar.datastructures import Cookie

SESSION_COOKIE = "provisioning_session"
REFRESH_COOKIE = "provisioning_refresh"
CSRF_FIELD = "_csrf"
CSRF_HEADER = "x-csrf-token"


def csrf_valid(expected: str, presented: str | None) -> bool:
    return bool(expected and presented) and hmac.compare_digest(expected, presented or "")


@dataclass(frozen=True, slots=True)
class Answer:
    """The control center's answer: its status and envelope."""

    status: int
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.status < 400 and bool(self.body.get("success"))

    @property
    def data(self) -> Any:
        return self.body.get("data")

    @property
    def error(self) -> str:
        return str(self.body.get("error") or f"the control center answered {self.status}")


class ControlCenter:
    """The control center's account endpoints (`/auth`, `/user`) as the console calls
    them: at this orchestrator, which mounts the control center's own account app
    (`control_center.gate.account_routes`), in process and as the browser's address, so
    the login rate limit counts each browser and not the orchestrator."""

    def __init__(self, app: Any, client: tuple[str, int] | None) -> None:
        import httpx

        self.transport = httpx.ASGITransport(app=app, client=client or ("127.0.0.1", 0))

    async def call(
        self,
        path: str,
        body: dict[str, Any] | None = None,
        token: str | None = None,
        method: str = "POST",
    ) -> Answer:
        import httpx

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            async with httpx.AsyncClient(
                transport=self.transport, base_url="http://console.invalid", timeout=30
            ) as client:
                response = await client.request(method, path, json=body or {}, headers=headers)
        except httpx.HTTPError as exc:
            return Answer(503, {"error": f"the account service did not answer: {exc}"})
        try:
            parsed = response.json()
        except ValueError:
            parsed = {}
        return Answer(response.status_code, parsed if isinstance(parsed, dict) else {})

    async def login(self, username: str, password: str, code: str | None) -> Answer:
        body: dict[str, Any] = {"username": username, "password": password}
        if code:
            body["mfa_code"] = code
        return await self.call("/auth/login", body)

    async def refresh(self, refresh_token: str) -> Answer:
        return await self.call("/auth/refresh", {"refresh_token": refresh_token})

    async def logout(self, token: str) -> Answer:
        return await self.call("/auth/logout", token=token)

    async def enroll_mfa(self, token: str) -> Answer:
        return await self.call("/auth/mfa/enroll", token=token)

    async def verify_mfa(self, token: str, code: str) -> Answer:
        return await self.call("/auth/mfa/verify", {"code": code}, token=token)

    async def api_keys(self, token: str) -> Answer:
        return await self.call("/api-keys?limit=200", token=token, method="GET")

    async def create_api_key(self, token: str, body: dict[str, Any]) -> Answer:
        return await self.call("/api-keys", body, token=token)

    async def revoke_api_key(self, token: str, key_id: str) -> Answer:
        return await self.call(f"/api-keys/{quote(key_id, safe='')}", token=token, method="DELETE")

    async def change_password(self, token: str, current: str, new: str, confirm: str) -> Answer:
        body = {"current_password": current, "new_password": new, "confirm_new_password": confirm}
        return await self.call("/user/password", body, token=token, method="PUT")


class Renewals:
    """One renewal per lapsed pair: requests presenting the same pair (access and refresh
    cookie) while its renewal runs, or up to `keep` seconds after, get the same answer
    (the new pair). Kept in memory only, under the pair's digest, for `keep` seconds. A
    refresh token presented alone, or later, is spent again: a reuse, which ends the
    session."""

    def __init__(self, keep: float = 10.0) -> None:
        self.keep = keep
        self._renewals: dict[str, tuple[float, asyncio.Task[Answer]]] = {}

    async def renew(self, center: ControlCenter, access_token: str, refresh_token: str) -> Answer:
        now = time.monotonic()
        for key in [k for k, (until, _) in self._renewals.items() if until < now]:
            del self._renewals[key]
        pair = f"{len(access_token)}:{access_token}{refresh_token}"
        key = hashlib.sha256(pair.encode()).hexdigest()
        if key not in self._renewals:
            task = asyncio.ensure_future(center.refresh(refresh_token))
            self._renewals[key] = (now + self.keep, task)
        return await asyncio.shield(self._renewals[key][1])


def session_cookies(request: Request[Any, Any, Any], data: dict[str, Any]) -> list[Cookie]:
    """The cookies of a login's or a refresh's token pair."""
    secure = request.url.scheme == "https"
    return [
        Cookie(
            key=SESSION_COOKIE,
            value=str(data["token"]),
            path="/",
            httponly=True,
            samesite="strict",
            secure=secure,
        ),
        Cookie(
            key=REFRESH_COOKIE,
            value=str(data["refresh_token"]),
            path="/ui",
            httponly=True,
            samesite="strict",
            secure=secure,
        ),
    ]


def forget_session(response: Response[Any]) -> Response[Any]:
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(REFRESH_COOKIE, path="/ui")
    return response
