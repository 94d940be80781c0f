"""``/v1/identity-verification``: identity verification on or off, and its secret's rotation."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post, put

from services.admin.bodies import decode_body
from services.admin.identity.schemas import (
    IdentitySecret,
    IdentitySecretRotate,
    IdentityVerification,
    IdentityVerificationChanged,
    rotate_decoder,
    update_decoder,
)
from services.admin.identity.service import read_settings, rotate_secret, set_enabled
from services.admin.state import Admin, Env


class IdentityController(Controller):
    """Whether write-key requests must prove their userId with an identity token."""

    path = "/v1/identity-verification"

    @get("/")
    async def read(self, admin: Admin, env: Env) -> IdentityVerification:
        """On or off, whether a secret is set, and the previous secret's grace period."""
        async with admin.pool.acquire() as conn:
            return await read_settings(conn, env.id, admin.settings.identity_token_max_age_seconds)

    @put("/")
    async def update(
        self, request: Request[Any, Any, Any], admin: Admin, env: Env
    ) -> IdentityVerificationChanged:
        """``{"enabled": bool}``; turning it on without a secret creates one, shown once."""
        body = decode_body(update_decoder, await request.body())
        async with admin.pool.acquire() as conn:
            return await set_enabled(
                conn, env.id, body.enabled, admin.settings.identity_token_max_age_seconds
            )

    @post("/rotate-secret", status_code=200)
    async def rotate(
        self, request: Request[Any, Any, Any], admin: Admin, env: Env
    ) -> IdentitySecret:
        """A new secret (shown once); the previous one keeps verifying tokens for
        ``graceSeconds`` (default: the token maximum age)."""
        raw = await request.body()
        body = decode_body(rotate_decoder, raw) if raw.strip() else IdentitySecretRotate()
        max_age = admin.settings.identity_token_max_age_seconds
        grace = max_age if body.graceSeconds is None else body.graceSeconds
        async with admin.pool.acquire() as conn:
            return await rotate_secret(conn, env.id, grace, max_age)
