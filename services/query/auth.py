"""Who may read a user's memberships: any key of the environment, and with identity
verification on, a write-key caller only for the user its identity token names."""

from __future__ import annotations

from collections.abc import Mapping

import jwt

from shared.environments import Environment
from shared.http import ApiError, EnvironmentCache, key_from_headers

IDENTITY_HEADER = "x-identity-token"


async def authorize(envs: EnvironmentCache, headers: Mapping[str, str]) -> Environment:
    """The caller's environment (write or secret key), or an :class:`ApiError` 401."""
    return await envs.require(key_from_headers(headers))


def verify_identity(env: Environment, headers: Mapping[str, str], user_id: str) -> None:
    """Raise 401 unless the request may read ``user_id``: secret-key callers always may;
    write-key callers of an environment with identity verification need ``X-Identity-Token``,
    an HS256 JWT signed with the identity secret whose ``sub`` is ``user_id``."""
    if env.secret or not env.identity_verification:
        return
    token = headers.get(IDENTITY_HEADER)
    if not token:
        raise ApiError(
            401, "identity verification is on: send the X-Identity-Token header", "X-Identity-Token"
        )
    if not env.identity_secret:
        raise ApiError(
            401, "identity verification is on but no identity secret is set", "X-Identity-Token"
        )
    try:
        claims = jwt.decode(
            token, env.identity_secret, algorithms=["HS256"], options={"require": ["sub"]}
        )
    except jwt.PyJWTError as exc:
        raise ApiError(401, f"invalid identity token: {exc}", "X-Identity-Token") from exc
    if claims.get("sub") != user_id:
        raise ApiError(401, "the identity token is for another user", "X-Identity-Token")
