"""Who may read a user's memberships: any key of the environment, and with identity
verification on, a write-key caller only for the user its identity token names."""

from __future__ import annotations

from collections.abc import Mapping

from shared.environments import Environment
from shared.http import ApiError, EnvironmentCache, key_from_headers
from shared.identity_tokens import token_problem

IDENTITY_HEADER = "x-identity-token"


async def authorize(envs: EnvironmentCache, headers: Mapping[str, str]) -> Environment:
    """The caller's environment (write or secret key), or an :class:`ApiError` 401."""
    return await envs.require(key_from_headers(headers))


def verify_identity(
    env: Environment, headers: Mapping[str, str], user_id: str, max_age: float
) -> None:
    """Raise 401 unless the request may read ``user_id``: secret-key callers always may;
    write-key callers of an environment with identity verification need ``X-Identity-Token``
    proving ``user_id`` (:func:`shared.identity_tokens.token_problem`)."""
    if env.secret or not env.identity_verification:
        return
    token = headers.get(IDENTITY_HEADER)
    if not token:
        raise ApiError(
            401, "identity verification is on: send the X-Identity-Token header", "X-Identity-Token"
        )
    if (problem := token_problem(env, token, user_id, max_age)) is not None:
        raise ApiError(401, problem, "X-Identity-Token")
