"""Identity tokens: an HS256 JWT signed with the environment's identity secret, whose ``sub``
proves the userId a write-key request is about (ingest and query check them the same way).

- ``exp``, when present, is honoured; a token without ``exp`` must carry ``iat`` and is
  refused once older than the maximum age (``SEGMENTS_IDENTITY_TOKEN_MAX_AGE_SECONDS``): a
  token that leaked from a page would otherwise work for ever.
- During a rotation's grace period the previous secret verifies tokens too.
"""

from __future__ import annotations

import time

import jwt

from shared.environments import Environment

#: Clock difference tolerated between the customer's back-end and us.
LEEWAY_SECONDS = 60


def token_problem(env: Environment, token: str, subject: str, max_age: float) -> str | None:
    """Why ``token`` does not prove ``subject`` for ``env`` (a message for the caller), or
    None when it does."""
    secrets = [s for s in (env.identity_secret, env.previous_identity_secret) if s]
    if not secrets:
        return "identity verification is on but the environment has no identity secret"
    claims = None
    problem = "invalid identity token"
    for secret in secrets:
        try:
            claims = jwt.decode(
                token,
                secret,
                algorithms=["HS256"],
                options={"require": ["sub"]},
                leeway=LEEWAY_SECONDS,
            )
            break
        except jwt.ExpiredSignatureError:
            return "the identity token has expired"
        except jwt.InvalidSignatureError:
            problem = "invalid identity token: the signature does not match the identity secret"
        except jwt.InvalidTokenError as exc:
            return f"invalid identity token: {exc}"
    if claims is None:
        return problem
    if "exp" not in claims:
        iat = claims.get("iat")
        if not isinstance(iat, int | float) or isinstance(iat, bool):
            return "invalid identity token: a token without exp needs iat (issued at)"
        if time.time() - iat > max_age + LEEWAY_SECONDS:
            return f"the identity token is older than {max_age:g} s (iat) and has no exp"
    if claims.get("sub") != subject:
        return "the identity token's sub is not the userId"
    return None
