"""The console calls the orchestrator's public API, in process.

Each call is an HTTP request to the same Litestar app (through httpx's ASGI transport,
no socket), with the session's token as its bearer and the browser's address as its
client: it passes the same guard, policies, rate limits, validation and audit as any
API client's request, and the page shows exactly what the API answers. So the console
can offer no action the API does not, and a user sees only what their policies let
them read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status < 400

    @property
    def data(self) -> Any:
        return self.body.get("data")

    @property
    def error(self) -> str:
        return str(self.body.get("error") or f"the API answered {self.status}")

    @property
    def code(self) -> str:
        return str(self.body.get("code") or "")

    @property
    def total(self) -> int:
        try:
            return int(self.headers.get("x-total-count", "0"))
        except ValueError:
            return 0


class Api:
    """The API as one session sees it. (httpx is imported where it is used: it costs
    every start-up a twentieth, and many never open the console.)"""

    def __init__(self, app: Any, token: str, client: tuple[str, int] | None) -> None:
        import httpx

        self.transport = httpx.ASGITransport(app=app, client=client or ("127.0.0.1", 0))
        self.token = token

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
    ) -> Reply:
        import httpx

        query = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        async with httpx.AsyncClient(
            transport=self.transport,
            base_url="http://console.invalid",
            headers={"Authorization": f"Bearer {self.token}"},
        ) as client:
            response = await client.request(method, path, params=query, json=json)
        try:
            body = response.json()
        except ValueError:
            body = {}
        return Reply(
            response.status_code,
            body if isinstance(body, dict) else {},
            {k.lower(): v for k, v in response.headers.items()},
        )

    async def text(self, path: str) -> tuple[int, str]:
        """A GET whose answer is not the envelope (`/metrics`): its status and text."""
        import httpx

        async with httpx.AsyncClient(
            transport=self.transport,
            base_url="http://console.invalid",
            headers={"Authorization": f"Bearer {self.token}"},
        ) as client:
            response = await client.get(path)
        return response.status_code, response.text

    async def get(self, path: str, **params: Any) -> Reply:
        return await self.call("GET", path, params=params)

    async def post(self, path: str, json: Any = None) -> Reply:
        return await self.call("POST", path, json=json if json is not None else {})
