"""``/v1/tags``: thin handlers over :mod:`services.admin.tags.service`."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, delete, get, patch, post
from litestar.params import FromPath, FromQuery

from services.admin.bodies import decode_body
from services.admin.segments.controller import page_args
from services.admin.segments.dependents import Dependents, enqueue_dependents
from services.admin.state import Admin, AdminState, Env
from services.admin.tags import service
from services.admin.tags.schemas import (
    Tag,
    TagList,
    TagUsersChange,
    TagUsersPage,
    create_decoder,
    update_decoder,
)
from services.admin.users.refs import refs_decoder, user_ids_page


async def _after_commit(admin: AdminState, env_id: int, outcome: service.TagOutcome) -> None:
    for segment_id, version in outcome.versions:
        await admin.enqueue_recompute(env_id, segment_id, version)
    # a new version's recompute, enqueued just now, reads the committed data already
    fresh = {segment_id for segment_id, _ in outcome.versions}
    rest = [pair for pair in outcome.dependents.segments if pair[0] not in fresh]
    await enqueue_dependents(admin, env_id, Dependents(rest))


async def _tag_users(
    request: Request[Any, Any, Any], admin: AdminState, env_id: int, tag: str, *, attach: bool
) -> TagUsersChange:
    body = decode_body(refs_decoder, await request.body())
    async with admin.pool.acquire() as conn:
        answer, created, dependents = await service.change_tag_users(
            conn, env_id, tag, body, attach=attach
        )
    if created:
        await admin.enqueue_drain()
    await enqueue_dependents(admin, env_id, dependents)
    return answer


class TagController(Controller):
    """Key:value tags, who carries them, and their auto-segments."""

    path = "/v1/tags"

    @post("/", status_code=201)
    async def create(self, request: Request[Any, Any, Any], admin: Admin, env: Env) -> Tag:
        """Create a tag; ``autoSegment: true`` also creates its segment "Key: Value"."""
        body = decode_body(create_decoder, await request.body())
        async with admin.pool.acquire() as conn:
            outcome = await service.create_tag(conn, env.id, body)
        await _after_commit(admin, env.id, outcome)
        assert outcome.tag is not None
        return outcome.tag

    @get("/")
    async def list_all(self, admin: Admin, env: Env, key: FromQuery[str | None] = None) -> TagList:
        """Every tag (of one ``key`` when given) with its user count."""
        async with admin.pool.acquire() as conn:
            return TagList(await service.list_tags(conn, env.id, key))

    @get("/{tag:str}")
    async def read(self, admin: Admin, env: Env, tag: FromPath[str]) -> Tag:
        """One tag, by id."""
        async with admin.pool.acquire() as conn:
            return await service.require_tag(conn, env.id, tag)

    @patch("/{tag:str}")
    async def update(
        self, request: Request[Any, Any, Any], admin: Admin, env: Env, tag: FromPath[str]
    ) -> Tag:
        """Rename a tag (segments naming it follow) or give it an auto-segment."""
        body = decode_body(update_decoder, await request.body())
        async with admin.pool.acquire() as conn:
            outcome = await service.update_tag(conn, env.id, tag, body)
        await _after_commit(admin, env.id, outcome)
        assert outcome.tag is not None
        return outcome.tag

    @delete("/{tag:str}", status_code=204)
    async def remove(self, admin: Admin, env: Env, tag: FromPath[str]) -> None:
        """Delete a tag, detach it from everyone, and delete its auto-segment."""
        async with admin.pool.acquire() as conn:
            outcome = await service.delete_tag(conn, env.id, tag)
        await _after_commit(admin, env.id, outcome)

    @get("/{tag:str}/users")
    async def users(
        self,
        admin: Admin,
        env: Env,
        tag: FromPath[str],
        limit: FromQuery[int] = 100,
        cursor: FromQuery[str | None] = None,
    ) -> TagUsersPage:
        """A page of the users carrying the tag; pass ``nextCursor`` back as ``cursor``."""
        after = page_args(limit, cursor)
        async with admin.pool.acquire() as conn:
            found = await service.require_tag(conn, env.id, tag)
            ids, next_after = await user_ids_page(
                conn, "user_tags", env.id, int(found.id), limit, after
            )
        return TagUsersPage(ids, None if next_after is None else str(next_after))

    @post("/{tag:str}/users", status_code=200)
    async def attach(
        self, request: Request[Any, Any, Any], admin: Admin, env: Env, tag: FromPath[str]
    ) -> TagUsersChange:
        """Attach the tag to users (``{"userIds": [...], "emails": [...]}``); unknown userIds
        are created as new users."""
        return await _tag_users(request, admin, env.id, tag, attach=True)

    @delete("/{tag:str}/users", status_code=200)
    async def detach(
        self, request: Request[Any, Any, Any], admin: Admin, env: Env, tag: FromPath[str]
    ) -> TagUsersChange:
        """Detach the tag from users (same body)."""
        return await _tag_users(request, admin, env.id, tag, attach=False)
