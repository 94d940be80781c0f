"""Environments and their keys: creation, key rotation and authentication."""

from __future__ import annotations

import hashlib
import hmac
import secrets

import asyncpg
import msgspec

from shared.db import Conn

ALL_USERS_KEY = "all-users"


class EnvironmentKeys(msgspec.Struct, frozen=True):
    """What creating an environment hands out, once: the secret key is never stored."""

    id: int
    name: str
    writeKey: str
    secretKey: str


class Environment(msgspec.Struct, frozen=True):
    """An authenticated caller's environment and which of its keys it used."""

    id: int
    name: str
    secret: bool  # True when the secret key was used (full access)
    identity_verification: bool = False
    identity_secret: str | None = None
    #: the key used was retired by a rotation and works until its grace period ends
    retiring: bool = False
    #: the identity secret a rotation replaced, while its grace period lasts
    previous_identity_secret: str | None = None


def hash_secret(key: str) -> bytes:
    """Secret keys are long random strings, so one SHA-256 is enough to store them."""
    return hashlib.sha256(key.encode()).digest()


def new_write_key() -> str:
    return "wk_" + secrets.token_urlsafe(24)


def new_secret_key() -> str:
    return "sk_" + secrets.token_urlsafe(32)


async def ensure_environment(
    conn: Conn,
    name: str,
    *,
    write_key: str | None = None,
    secret_key: str | None = None,
) -> EnvironmentKeys:
    """Create environment ``name`` (or set the keys of the existing one) and its built-in
    "All users" segment. Keys not given are generated."""
    write_key = write_key or new_write_key()
    secret_key = secret_key or new_secret_key()
    async with conn.transaction():
        env_id = await conn.fetchval(
            """INSERT INTO environments (name, write_key, secret_key_hash) VALUES ($1, $2, $3)
               ON CONFLICT (name) DO UPDATE
                 SET write_key = EXCLUDED.write_key, secret_key_hash = EXCLUDED.secret_key_hash
               RETURNING id""",
            name,
            write_key,
            hash_secret(secret_key),
        )
        await conn.execute(
            """INSERT INTO segments (env_id, key, name, kind, description)
               VALUES ($1, $2, 'All users', 'all', 'Every user of the environment.')
               ON CONFLICT (env_id, key) DO NOTHING""",
            env_id,
            ALL_USERS_KEY,
        )
    return EnvironmentKeys(id=env_id, name=name, writeKey=write_key, secretKey=secret_key)


async def authenticate(conn: Conn | asyncpg.Pool, key: str) -> Environment | None:
    """The environment a key belongs to, or None: its current write or secret key, or a key
    a rotation retired whose grace period has not ended (``retiring``)."""
    env = await _current_key(conn, key)
    if env is None:
        env = await _retired_key(conn, key)
    return env


async def _retired_key(conn: Conn | asyncpg.Pool, key: str) -> Environment | None:
    row = await conn.fetchrow(
        """SELECT r.secret, e.write_key FROM retired_keys r
           JOIN environments e ON e.id = r.env_id
           WHERE r.key_hash = $1 AND r.until > now()""",
        hash_secret(key),
    )
    if row is None:
        return None
    env = await _current_key(conn, row["write_key"])
    return (
        None if env is None else msgspec.structs.replace(env, secret=row["secret"], retiring=True)
    )


async def _current_key(conn: Conn | asyncpg.Pool, key: str) -> Environment | None:
    """The environment whose current key is ``key``. Secret keys are compared by hash in
    constant time; write keys are public and looked up directly."""
    if key.startswith("sk_"):
        digest = hash_secret(key)
        row = await conn.fetchrow(
            """SELECT id, name, secret_key_hash, identity_verification, identity_secret,
                      CASE WHEN previous_identity_secret_until > now()
                          THEN previous_identity_secret END AS previous_identity_secret
               FROM environments WHERE secret_key_hash = $1""",
            digest,
        )
        if row is None or not hmac.compare_digest(bytes(row["secret_key_hash"]), digest):
            return None
        secret = True
    else:
        row = await conn.fetchrow(
            """SELECT id, name, write_key, identity_verification, identity_secret,
                      CASE WHEN previous_identity_secret_until > now()
                          THEN previous_identity_secret END AS previous_identity_secret
               FROM environments WHERE write_key = $1""",
            key,
        )
        if row is None or not hmac.compare_digest(row["write_key"].encode(), key.encode()):
            return None
        secret = False
    return Environment(
        id=row["id"],
        name=row["name"],
        secret=secret,
        identity_verification=row["identity_verification"],
        identity_secret=row["identity_secret"],
        previous_identity_secret=row["previous_identity_secret"],
    )
