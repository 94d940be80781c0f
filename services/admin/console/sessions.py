"""Console sessions, kept server-side in PostgreSQL.

The cookie holds a random token (HttpOnly, SameSite=Lax); the table holds its SHA-256, the
account, the environment the console shows and a CSRF token. A request signed in this way
reaches the same JSON API as a secret key does (``/v1/...``), for the session's environment
only; any request that changes something must send the CSRF token back
(``X-CSRF-Token`` header, or the ``csrf`` form field of the console's own forms).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

import asyncpg
from litestar import Request

from shared.db import Conn
from shared.environments import Environment
from shared.http import ApiError

COOKIE = "segments_session"
CSRF_HEADER = "x-csrf-token"
#: A session ends after this long without a request, and in any case after ``MAX_HOURS``.
IDLE_HOURS = 12
MAX_HOURS = 24 * 7
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """A signed-in request: who, which environment (None when the account has none), and
    the CSRF token its pages send back."""

    account_id: int
    email: str
    csrf: str
    env_id: int | None
    env_name: str | None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def start_session(conn: Conn, account_id: int) -> str:
    """A new session for ``account_id`` (showing its first environment); returns the cookie
    token. Expired sessions are pruned on the way."""
    token = secrets.token_urlsafe(32)
    await conn.execute("DELETE FROM console_sessions WHERE expires_at < now()")
    await conn.execute(
        """INSERT INTO console_sessions (token_hash, account_id, env_id, csrf_token, expires_at)
           VALUES ($1, $2,
                   (SELECT ae.env_id FROM console_account_environments ae
                    JOIN environments e ON e.id = ae.env_id
                    WHERE ae.account_id = $2 ORDER BY e.name LIMIT 1),
                   $3, now() + make_interval(hours => $4))""",
        _digest(token),
        account_id,
        secrets.token_urlsafe(32),
        IDLE_HOURS,
    )
    return token


async def end_session(conn: Conn | asyncpg.Pool, token: str) -> None:
    await conn.execute("DELETE FROM console_sessions WHERE token_hash = $1", _digest(token))


async def read_session(pool: asyncpg.Pool, token: str | None) -> ConsoleSession | None:
    """The live session of a cookie token (its idle expiry pushed back), or None. The
    environment is dropped when the account no longer has access to it."""
    if not token:
        return None
    row = await pool.fetchrow(
        """UPDATE console_sessions s
           SET last_seen_at = now(),
               expires_at = least(now() + make_interval(hours => $2),
                                  s.created_at + make_interval(hours => $3))
           FROM console_accounts a
           WHERE s.token_hash = $1 AND s.expires_at > now() AND a.id = s.account_id
           RETURNING s.account_id, a.email, s.csrf_token, s.env_id,
                     (SELECT e.name FROM console_account_environments ae
                      JOIN environments e ON e.id = ae.env_id
                      WHERE ae.account_id = s.account_id AND ae.env_id = s.env_id) AS env_name""",
        _digest(token),
        IDLE_HOURS,
        MAX_HOURS,
    )
    if row is None:
        return None
    env_name = row["env_name"]
    return ConsoleSession(
        account_id=row["account_id"],
        email=row["email"],
        csrf=row["csrf_token"],
        env_id=row["env_id"] if env_name is not None else None,
        env_name=env_name,
    )


async def switch_environment(pool: asyncpg.Pool, token: str, env_id: int) -> bool:
    """Show ``env_id`` in this session; False when the account does not have access."""
    result = await pool.execute(
        """UPDATE console_sessions s SET env_id = $2
           WHERE s.token_hash = $1 AND EXISTS (
               SELECT 1 FROM console_account_environments ae
               WHERE ae.account_id = s.account_id AND ae.env_id = $2)""",
        _digest(token),
        env_id,
    )
    return bool(result != "UPDATE 0")


def csrf_ok(session: ConsoleSession, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(session.csrf.encode(), (sent or "").encode())


async def session_environment(request: Request[Any, Any, Any], pool: asyncpg.Pool) -> Environment:
    """The environment of a request signed in with the console's cookie, for the JSON API:
    401 without a live session, 403 without an environment or, on a change, without the
    CSRF token."""
    session = await read_session(pool, request.cookies.get(COOKIE))
    if session is None:
        raise ApiError(401, "missing API key: send Authorization: Bearer <key>", "authorization")
    if request.method not in SAFE_METHODS and not csrf_ok(
        session, request.headers.get(CSRF_HEADER)
    ):
        raise ApiError(403, "missing or wrong X-CSRF-Token for this session", "x-csrf-token")
    if session.env_id is None or session.env_name is None:
        raise ApiError(403, "this console account has no environment", "authorization")
    row = await pool.fetchrow(
        "SELECT identity_verification, identity_secret FROM environments WHERE id = $1",
        session.env_id,
    )
    if row is None:
        raise ApiError(403, "this console account has no environment", "authorization")
    return Environment(
        id=session.env_id,
        name=session.env_name,
        secret=True,
        identity_verification=row["identity_verification"],
        identity_secret=row["identity_secret"],
    )
