"""Identity verification: a write-key message must prove its userId with an HS256 JWT.

When an environment turns identity verification on, the public write key alone no longer lets
anyone write to any user: each message carries ``identityToken``, signed by the customer's
back-end with the environment's identity secret, whose ``sub`` is the message's userId.
Requests made with the secret key are trusted and need no token.
"""

from __future__ import annotations

import jwt

from shared.environments import Environment
from shared.messages import MessageError


class IdentityError(MessageError):
    """A message whose identity token is missing or does not prove its userId."""

    def __init__(self, message: str) -> None:
        super().__init__("identityToken", message)


def needs_identity_token(env: Environment) -> bool:
    """Whether messages sent with this key must carry a valid identity token."""
    return env.identity_verification and not env.secret


def verify_identity(env: Environment, user_id: str | None, token: str | None) -> None:
    """Raise :class:`IdentityError` (field ``identityToken``) unless ``token`` proves ``user_id``.

    The token is an HS256 JWT signed with the environment's identity secret; its ``sub`` must
    equal ``user_id``; an ``exp`` claim, when present, is honoured.
    """
    if not token:
        raise IdentityError("identity verification is on: the message needs an identityToken")
    if user_id is None:
        raise IdentityError("identity verification is on: the message needs a verified userId")
    if not env.identity_secret:
        raise IdentityError("identity verification is on but the environment has no secret")
    try:
        claims = jwt.decode(
            token, env.identity_secret, algorithms=["HS256"], options={"require": ["sub"]}
        )
    except jwt.ExpiredSignatureError:
        raise IdentityError("the identity token has expired") from None
    except jwt.InvalidTokenError as exc:
        raise IdentityError(f"invalid identity token: {exc}") from None
    if claims.get("sub") != user_id:
        raise IdentityError("the identity token's sub is not the message's userId")
