"""Identity verification: turning it on and off, and rotating its secret with a grace period.

The secret signs the identity tokens customers' back-ends mint (HS256, so it is stored as is,
and shown only when created). A rotation keeps the previous secret verifying tokens for a
grace period, by default the token maximum age (``SEGMENTS_IDENTITY_TOKEN_MAX_AGE_SECONDS``,
a day), so no token handed out before the rotation stops working early; rotating again during
a grace period ends the older secret at once. The services cache environments for
``SEGMENTS_CACHE_SECONDS``, so a change applies within twice that.
"""

from __future__ import annotations

import secrets

from services.admin.identity.schemas import (
    IdentitySecret,
    IdentityVerification,
    IdentityVerificationChanged,
)
from shared.db import Conn


def new_identity_secret() -> str:
    return "is_" + secrets.token_urlsafe(32)


async def read_settings(conn: Conn, env_id: int, max_age: float) -> IdentityVerification:
    row = await conn.fetchrow(
        """SELECT identity_verification, identity_secret IS NOT NULL AS secret_set,
                  CASE WHEN previous_identity_secret_until > now()
                       THEN previous_identity_secret_until END AS previous_until
           FROM environments WHERE id = $1""",
        env_id,
    )
    assert row is not None
    return IdentityVerification(
        enabled=row["identity_verification"],
        secretSet=row["secret_set"],
        previousSecretValidUntil=row["previous_until"],
        tokenMaxAgeSeconds=max_age,
    )


async def set_enabled(
    conn: Conn, env_id: int, enabled: bool, max_age: float
) -> IdentityVerificationChanged:
    """Turn verification on or off; on without a secret creates one (returned once)."""
    created = new_identity_secret()
    async with conn.transaction():
        made = await conn.fetchval(
            """UPDATE environments SET identity_verification = $2,
                      identity_secret = CASE WHEN $2 AND identity_secret IS NULL THEN $3
                                             ELSE identity_secret END
               WHERE id = $1
               RETURNING identity_secret = $3""",
            env_id,
            enabled,
            created,
        )
    return IdentityVerificationChanged(
        settings=await read_settings(conn, env_id, max_age), secret=created if made else None
    )


async def rotate_secret(
    conn: Conn, env_id: int, grace_seconds: float, max_age: float
) -> IdentitySecret:
    """A new secret; the current one verifies tokens for ``grace_seconds`` more."""
    secret = new_identity_secret()
    await conn.execute(
        """UPDATE environments
           SET previous_identity_secret = CASE WHEN $3 > 0 THEN identity_secret END,
               previous_identity_secret_until =
                   CASE WHEN $3 > 0 AND identity_secret IS NOT NULL
                        THEN now() + make_interval(secs => $3) END,
               identity_secret = $2
           WHERE id = $1""",
        env_id,
        secret,
        float(grace_seconds),
    )
    return IdentitySecret(secret=secret, settings=await read_settings(conn, env_id, max_age))
