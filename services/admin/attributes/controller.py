"""``/v1/attributes``: attribute types and their ingestion warnings."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, put
from litestar.params import FromPath, FromQuery

from services.admin.attributes import service
from services.admin.attributes.schemas import (
    AttributeList,
    AttributeTypeChange,
    WarningPage,
    update_decoder,
)
from services.admin.bodies import decode_body
from services.admin.state import Admin, Env
from shared.http import ApiError

MAX_PAGE = 1000


class AttributeController(Controller):
    """Attribute types: inferred from the first value seen, declared or corrected here."""

    path = "/v1/attributes"
    # ("scope" is a reserved parameter name in Litestar, hence attr_scope)

    @get("/")
    async def list_all(self, admin: Admin, env: Env) -> AttributeList:
        """Every typed attribute (user, company and membership scope) with its warnings."""
        return AttributeList(await service.list_attributes(admin.pool, env.id))

    @put("/{attr_scope:str}/{name:str}")
    async def set_type(
        self,
        request: Request[Any, Any, Any],
        admin: Admin,
        env: Env,
        attr_scope: FromPath[str],
        name: FromPath[str],
    ) -> AttributeTypeChange:
        """Declare or correct the type; the dynamic segments using the attribute are
        recomputed (a new version each, status 'computing')."""
        body = decode_body(update_decoder, await request.body())
        async with admin.pool.acquire() as conn:
            info, bumped = await service.set_type(conn, env.id, attr_scope, name, body.type)
        for segment_id, _, version in bumped:
            await admin.enqueue_recompute(env.id, segment_id, version)
        return AttributeTypeChange(attribute=info, recomputing=[key for _, key, _ in bumped])

    @get("/{attr_scope:str}/{name:str}/warnings")
    async def warnings(
        self,
        admin: Admin,
        env: Env,
        attr_scope: FromPath[str],
        name: FromPath[str],
        limit: FromQuery[int] = 100,
        cursor: FromQuery[str | None] = None,
    ) -> WarningPage:
        """Ingestion warnings about values of this attribute, newest first."""
        if not 1 <= limit <= MAX_PAGE:
            raise ApiError(400, f"limit: must be between 1 and {MAX_PAGE}", "limit")
        before = None
        if cursor:
            if not (cursor.isascii() and cursor.isdigit() and len(cursor) < 19):
                raise ApiError(400, "cursor: not a cursor this endpoint returned", "cursor")
            before = int(cursor)
        return await service.warnings_page(admin.pool, env.id, attr_scope, name, limit, before)
