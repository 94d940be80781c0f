"""Identity verification: a write-key message must prove its userId with an HS256 JWT.

When an environment turns identity verification on, the public write key alone no longer lets
anyone write to any user: each message carries ``identityToken``, signed by the customer's
back-end with the environment's identity secret, whose ``sub`` is the message's userId.
Requests made with the secret key are trusted and need no token.
"""

from __future__ import annotations

from shared.environments import Environment
from shared.identity_tokens import token_problem
from shared.messages import MessageError


class IdentityError(MessageError):
    """A message whose identity token is missing or does not prove its userId."""

    def __init__(self, message: str) -> None:
        super().__init__("identityToken", message)


def needs_identity_token(env: Environment) -> bool:
    """Whether messages sent with this key must carry a valid identity token."""
    return env.identity_verification and not env.secret


def verify_identity(
    env: Environment, user_id: str | None, token: str | None, max_age: float
) -> None:
    """Raise :class:`IdentityError` (field ``identityToken``) unless ``token`` proves ``user_id``
    (:func:`shared.identity_tokens.token_problem`; ``max_age``: for tokens without ``exp``)."""
    if not token:
        raise IdentityError("identity verification is on: the message needs an identityToken")
    if user_id is None:
        raise IdentityError("identity verification is on: the message needs a verified userId")
    if (problem := token_problem(env, token, user_id, max_age)) is not None:
        raise IdentityError(problem)
