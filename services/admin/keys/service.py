"""Key rotation: a new write or secret key, the old one kept working for a grace period.

The replaced key goes to ``retired_keys`` (hashed) with the end of its grace period, and
:func:`shared.environments.authenticate` accepts it until then (the services cache keys for
``SEGMENTS_CACHE_SECONDS``, so a revoked key stops within twice that). One retired key per
kind: rotating again during a grace period ends the older key's at once. A retired key may
not rotate keys itself (403): whoever holds only a key being retired cannot lock the owner out.
"""

from __future__ import annotations

from services.admin.keys.schemas import Keys, RetiringKey, RotatedKey
from shared.db import Conn
from shared.environments import hash_secret, new_secret_key, new_write_key


async def read_keys(conn: Conn, env_id: int) -> Keys:
    write_key = await conn.fetchval("SELECT write_key FROM environments WHERE id = $1", env_id)
    rows = await conn.fetch(
        """SELECT secret, until FROM retired_keys WHERE env_id = $1 AND until > now()
           ORDER BY until""",
        env_id,
    )
    return Keys(
        writeKey=write_key,
        retiring=[
            RetiringKey(kind="secret" if r["secret"] else "write", validUntil=r["until"])
            for r in rows
        ],
    )


async def rotate_key(conn: Conn, env_id: int, kind: str, grace_seconds: int) -> RotatedKey:
    """Replace the environment's ``kind`` ("write" or "secret") key; the old one works for
    ``grace_seconds`` more."""
    secret = kind == "secret"
    new_key = new_secret_key() if secret else new_write_key()
    async with conn.transaction():
        old = await conn.fetchrow(
            "SELECT write_key, secret_key_hash FROM environments WHERE id = $1 FOR UPDATE",
            env_id,
        )
        assert old is not None
        old_hash = bytes(old["secret_key_hash"]) if secret else hash_secret(old["write_key"])
        await conn.execute(
            "DELETE FROM retired_keys WHERE env_id = $1 AND (secret = $2 OR until <= now())",
            env_id,
            secret,
        )
        until = None
        if grace_seconds > 0:
            until = await conn.fetchval(
                """INSERT INTO retired_keys (env_id, key_hash, secret, until)
                   VALUES ($1, $2, $3, now() + make_interval(secs => $4)) RETURNING until""",
                env_id,
                old_hash,
                secret,
                float(grace_seconds),
            )
        if secret:
            await conn.execute(
                "UPDATE environments SET secret_key_hash = $2 WHERE id = $1",
                env_id,
                hash_secret(new_key),
            )
        else:
            await conn.execute(
                "UPDATE environments SET write_key = $2 WHERE id = $1", env_id, new_key
            )
    return RotatedKey(kind=kind, key=new_key, previousKeyValidUntil=until)
