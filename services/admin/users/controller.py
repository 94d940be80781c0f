"""``/v1/users``: user profiles."""

from __future__ import annotations

from litestar import Controller, delete, get
from litestar.params import FromPath, FromQuery

from services.admin.state import Admin, Env
from services.admin.users.history import (
    UserChanges,
    UserEvents,
    membership_history,
    recent_events,
    user_pk,
)
from services.admin.users.service import UserProfile, user_profile
from shared.erase import erase_user
from shared.http import ApiError
from shared.membership import outbox

MAX_HISTORY = 200


class UserController(Controller):
    """People known to the environment."""

    path = "/v1/users"

    @get("/{user_id:str}")
    async def profile(self, admin: Admin, env: Env, user_id: FromPath[str]) -> UserProfile:
        """The profile of a user, by userId or anonymous id; 404 when unknown."""
        found = await user_profile(admin.pool, env.id, user_id)
        if found is None:
            raise ApiError(404, f"userId: no user {user_id!r}", "userId")
        return found

    @get("/{user_id:str}/events")
    async def events(
        self, admin: Admin, env: Env, user_id: FromPath[str], limit: FromQuery[int] = 50
    ) -> UserEvents:
        """The user's latest events, newest first; 404 when unknown."""
        pk = await _require_pk(admin, env.id, user_id, limit)
        return await recent_events(admin.pool, env.id, pk, limit)

    @get("/{user_id:str}/changes")
    async def changes(
        self, admin: Admin, env: Env, user_id: FromPath[str], limit: FromQuery[int] = 50
    ) -> UserChanges:
        """The user's entries into and exits from segments, newest first; 404 when unknown."""
        pk = await _require_pk(admin, env.id, user_id, limit)
        return await membership_history(admin.pool, env.id, pk, limit)

    @delete("/{user_id:str}", status_code=204)
    async def erase(self, admin: Admin, env: Env, user_id: FromPath[str]) -> None:
        """Erase a user (by userId or anonymous id) for a privacy request: profile, aliases,
        events, tags and memberships in PostgreSQL and Redis; their exits are recorded.
        404 when unknown."""
        async with admin.pool.acquire() as conn:
            erased = await erase_user(conn, env.id, user_id)
        if erased is None:
            raise ApiError(404, f"userId: no user {user_id!r}", "userId")
        await admin.cache.hold(env.id, erased.ids, erased.version + 1)
        await outbox.done(admin.pool, env.id, erased.outbox_id)


async def _require_pk(admin: Admin, env_id: int, user_id: str, limit: int) -> int:
    if not 1 <= limit <= MAX_HISTORY:
        raise ApiError(400, f"limit: must be between 1 and {MAX_HISTORY}", "limit")
    pk = await user_pk(admin.pool, env_id, user_id)
    if pk is None:
        raise ApiError(404, f"userId: no user {user_id!r}", "userId")
    return pk
