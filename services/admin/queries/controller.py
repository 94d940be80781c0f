"""Condition queries on the admin API: segment preview, explain, and the users list filter."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath, FromQuery

from services.admin.bodies import decode_body
from services.admin.exports.service import users_export
from services.admin.queries import service
from services.admin.queries.schemas import Explanation, Preview, preview_decoder
from services.admin.queries.user_order import parse_sort
from services.admin.state import Admin, Env
from shared.http import ApiError, decode_json

MAX_PAGE = 1000
_any_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder()


class QueryController(Controller):
    """Preview an unsaved condition, explain a membership, list users matching a filter."""

    path = "/v1"

    @post("/segments/preview", status_code=200)
    async def preview(self, request: Request[Any, Any, Any], admin: Admin, env: Env) -> Preview:
        """How many users ``conditions`` matches now, and a sample of 20."""
        body = decode_body(preview_decoder, await request.body())
        async with admin.pool.acquire() as conn:
            return await service.preview(
                conn, env.id, body.conditions, admin.settings.admin_query_timeout_seconds
            )

    @get("/segments/{segment:str}/explain/{user_id:str}")
    async def explain(
        self, admin: Admin, env: Env, segment: FromPath[str], user_id: FromPath[str]
    ) -> Explanation:
        """Why a user is (or is not) in a segment: the annotated condition tree."""
        async with admin.pool.acquire() as conn:
            return await service.explain_membership(conn, env.id, segment, user_id)

    @get("/users")
    async def users(
        self,
        admin: Admin,
        env: Env,
        filter: FromQuery[str | None] = None,
        limit: FromQuery[int] = 100,
        cursor: FromQuery[str | None] = None,
        format: FromQuery[str] = "json",
        columns: FromQuery[str | None] = None,
        sort: FromQuery[str | None] = None,
    ) -> Response[Any]:
        """Users matching ``filter`` (a condition as JSON; every user without it), in the
        order ``sort`` (``created``, the default, ``-created``, ``lastSeenAt``,
        ``-lastSeenAt``); pass ``nextCursor`` back as ``cursor`` with the same sort.
        ``format=csv``: every matching identified user as CSV, streamed, with ``columns``
        (userId and attribute names; default userId and every user attribute)."""
        if format not in ("json", "csv"):
            raise ApiError(400, "format: json or csv", "format")
        if not 1 <= limit <= MAX_PAGE:
            raise ApiError(400, f"limit: must be between 1 and {MAX_PAGE}", "limit")
        order = parse_sort(sort)
        condition: Any = None
        if filter is not None:
            condition = decode_json(_any_decoder, filter, "filter")
        if format == "csv":
            return await users_export(admin.pool, env.id, condition, columns)
        async with admin.pool.acquire() as conn:
            timeout = admin.settings.admin_query_timeout_seconds
            page = await service.list_users(
                conn, env.id, condition, limit, cursor or None, timeout, order
            )
            return Response(page)
