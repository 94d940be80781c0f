"""``/v1/users``: user profiles."""

from __future__ import annotations

from litestar import Controller, delete, get
from litestar.params import FromPath

from services.admin.state import Admin, Env
from services.admin.users.service import UserProfile, user_profile
from shared.erase import erase_user
from shared.http import ApiError


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
