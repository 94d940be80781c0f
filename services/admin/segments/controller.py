"""``/v1/segments``: thin handlers over :mod:`services.admin.segments.service`."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.params import FromPath, FromQuery

from services.admin.bodies import decode_body
from services.admin.exports.service import members_export
from services.admin.segments import service
from services.admin.segments.changes import ChangesPage, changes_page
from services.admin.segments.dependents import enqueue_dependents
from services.admin.segments.manual import MembersChange, change_members
from services.admin.segments.schemas import (
    MembersPage,
    Segment,
    SegmentList,
    create_decoder,
    update_decoder,
)
from services.admin.state import Admin, AdminState, Env
from services.admin.users.refs import refs_decoder, user_ids_page
from shared.http import ApiError
from shared.membership import outbox

MAX_PAGE = 1000


def page_args(limit: int, cursor: str | None) -> int:
    """The id to continue after, from a ``limit``/``cursor`` pair; 400 when either is bad."""
    if not 1 <= limit <= MAX_PAGE:
        raise ApiError(400, f"limit: must be between 1 and {MAX_PAGE}", "limit")
    if not cursor:
        return 0
    if not (cursor.isascii() and cursor.isdigit() and len(cursor) < 19):
        raise ApiError(400, "cursor: not a cursor this endpoint returned", "cursor")
    return int(cursor)


async def _members_change(
    request: Request[Any, Any, Any], admin: AdminState, env_id: int, segment: str, *, add: bool
) -> MembersChange:
    body = decode_body(refs_decoder, await request.body())
    async with admin.pool.acquire() as conn:
        result = await change_members(conn, env_id, segment, body, add=add)
        if result.changed:
            await outbox.flush(conn, admin.cache, env_id, result.changed, result.outbox_id)
    if result.created:
        await admin.enqueue_drain()
    await enqueue_dependents(admin, env_id, result.dependents)
    return result.answer


class SegmentController(Controller):
    """Segment definitions and their members."""

    path = "/v1/segments"

    @post("/", status_code=201)
    async def create(self, request: Request[Any, Any, Any], admin: Admin, env: Env) -> Segment:
        """Create a dynamic or manual segment; a dynamic one is then recomputed in bulk."""
        body = decode_body(create_decoder, await request.body())
        async with admin.pool.acquire() as conn:
            segment = await service.create_segment(conn, env.id, body)
        if segment.kind == "dynamic":
            await admin.enqueue_recompute(env.id, int(segment.id), segment.version)
        return segment

    @get("/")
    async def list_all(self, admin: Admin, env: Env) -> SegmentList:
        """Every segment of the environment with its live member count."""
        return SegmentList(await service.list_segments(admin.pool, env.id))

    @get("/{segment:str}")
    async def read(self, admin: Admin, env: Env, segment: FromPath[str]) -> Segment:
        """One segment, by key or id."""
        return service.to_segment(await service.require_segment(admin.pool, env.id, segment))

    @patch("/{segment:str}")
    async def update(
        self,
        request: Request[Any, Any, Any],
        admin: Admin,
        env: Env,
        segment: FromPath[str],
    ) -> Segment:
        """Change name, key, description or conditions; new conditions start a recompute."""
        body = decode_body(update_decoder, await request.body())
        async with admin.pool.acquire() as conn:
            updated, changed = await service.update_segment(conn, env.id, segment, body)
        if changed:
            await admin.enqueue_recompute(env.id, int(updated.id), updated.version)
        return updated

    @delete("/{segment:str}", status_code=204)
    async def remove(self, admin: Admin, env: Env, segment: FromPath[str]) -> None:
        """Delete a segment and its memberships."""
        async with admin.pool.acquire() as conn:
            await service.delete_segment(conn, env.id, segment)

    @get("/{segment:str}/members")
    async def members(
        self,
        admin: Admin,
        env: Env,
        segment: FromPath[str],
        limit: FromQuery[int] = 100,
        cursor: FromQuery[str | None] = None,
        format: FromQuery[str] = "json",
        columns: FromQuery[str | None] = None,
    ) -> Response[Any]:
        """A page of members, in a stable order; pass ``nextCursor`` back as ``cursor``.
        ``format=csv``: every identified member as CSV, streamed, with ``columns`` (default
        userId and enteredAt; attribute names add their values)."""
        if format not in ("json", "csv"):
            raise ApiError(400, "format: json or csv", "format")
        after = page_args(limit, cursor)
        row = await service.require_segment(admin.pool, env.id, segment)
        if format == "csv":
            return await members_export(admin.pool, env.id, row["id"], row["key"], columns)
        ids, next_after = await user_ids_page(
            admin.pool, "memberships", env.id, row["id"], limit, after
        )
        return Response(MembersPage(ids, None if next_after is None else str(next_after)))

    @post("/{segment:str}/members", status_code=200)
    async def add_members(
        self, request: Request[Any, Any, Any], admin: Admin, env: Env, segment: FromPath[str]
    ) -> MembersChange:
        """Add users (``{"userIds": [...], "emails": [...]}``) to a manual segment; unknown
        userIds are created as new users, unknown emails reported."""
        return await _members_change(request, admin, env.id, segment, add=True)

    @delete("/{segment:str}/members", status_code=200)
    async def remove_members(
        self, request: Request[Any, Any, Any], admin: Admin, env: Env, segment: FromPath[str]
    ) -> MembersChange:
        """Remove users (same body) from a manual segment; unknown ones are reported."""
        return await _members_change(request, admin, env.id, segment, add=False)

    @get("/{segment:str}/changes")
    async def changes(
        self,
        admin: Admin,
        env: Env,
        segment: FromPath[str],
        limit: FromQuery[int] = 100,
        cursor: FromQuery[str | None] = None,
    ) -> ChangesPage:
        """The segment's entries and exits, oldest first; follow ``nextCursor``."""
        after = page_args(limit, cursor)
        row = await service.require_segment(admin.pool, env.id, segment)
        return await changes_page(admin.pool, env.id, row["id"], limit, after)
