"""The JSON API, called in-process with the signed-in person's session.

Console pages never read or write data on their own: they call ``/v1/...`` on this very app
(an ASGI call, no network), authenticated by the session cookie and its CSRF token, so a
page can do exactly what the API lets that session do, with the API's checks and errors.
"""

from __future__ import annotations

from typing import Any

import httpx
from litestar import Request

from services.admin.console.sessions import COOKIE


class ApiFailure(Exception):
    """A 4xx/5xx answer of the API: its message names the field it is about."""

    def __init__(self, status: int, message: str, field: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


class ConsoleApi:
    """``/v1`` as one session sees it. Use as ``async with ConsoleApi(...) as api``."""

    def __init__(self, request: Request[Any, Any, Any], token: str, csrf: str) -> None:
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=request.app),  # type: ignore[arg-type]
            base_url="http://console.internal",
            headers={"Cookie": f"{COOKIE}={token}", "X-CSRF-Token": csrf},
            timeout=60,
        )

    async def __aenter__(self) -> ConsoleApi:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._client.aclose()

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """The decoded JSON answer (None for 204), or :class:`ApiFailure`."""
        resp = await self._client.request(
            method, path, json=json, params=params, content=content, headers=headers
        )
        if resp.status_code >= 400:
            try:
                body = resp.json()
                message, field = str(body.get("error", resp.text)), body.get("field")
            except ValueError:
                message, field = resp.text or resp.reason_phrase, None
            raise ApiFailure(resp.status_code, message, field)
        if resp.status_code == 204 or not resp.content:
            return None
        if resp.headers.get("content-type", "").startswith("application/json"):
            return resp.json()
        return resp.text

    async def get(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        return await self.call("GET", path, params=clean or None)

    async def post(self, path: str, body: Any = None) -> Any:
        return await self.call("POST", path, json=body)

    async def patch(self, path: str, body: Any) -> Any:
        return await self.call("PATCH", path, json=body)

    async def put(self, path: str, body: Any) -> Any:
        return await self.call("PUT", path, json=body)

    async def delete(self, path: str, body: Any = None) -> Any:
        return await self.call("DELETE", path, json=body)
