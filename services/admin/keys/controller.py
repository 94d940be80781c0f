"""``/v1/keys``: the environment's keys and their rotation with a grace period."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.params import FromPath

from services.admin.bodies import decode_body
from services.admin.keys.schemas import KeyRotate, Keys, RotatedKey, rotate_decoder
from services.admin.keys.service import read_keys, rotate_key
from services.admin.state import Admin, Env
from shared.environments import authenticate
from shared.http import ApiError, key_from_headers


class KeyController(Controller):
    """The write key (public), the retired keys still accepted, and rotation."""

    path = "/v1/keys"

    @get("/")
    async def read(self, admin: Admin, env: Env) -> Keys:
        """The write key and the retired keys still accepted (the secret key is never shown)."""
        async with admin.pool.acquire() as conn:
            return await read_keys(conn, env.id)

    @post("/{kind:str}/rotate", status_code=200)
    async def rotate(
        self, request: Request[Any, Any, Any], admin: Admin, env: Env, kind: FromPath[str]
    ) -> RotatedKey:
        """A new ``write`` or ``secret`` key; the old one works for ``graceSeconds`` more
        (default a day)."""
        if kind not in ("write", "secret"):
            raise ApiError(404, f"kind: no {kind!r} key (write or secret)", "kind")
        raw = await request.body()
        body = decode_body(rotate_decoder, raw) if raw.strip() else KeyRotate()
        async with admin.pool.acquire() as conn:
            # read afresh, not from the cache: a key retired a moment ago must not rotate
            caller = await authenticate(conn, key_from_headers(request.headers) or "")
            if caller is None or caller.retiring or caller.id != env.id:
                raise ApiError(
                    403,
                    "authorization: this key is being retired; rotate with the current one",
                    "authorization",
                )
            return await rotate_key(conn, env.id, kind, body.graceSeconds)
