"""Console accounts: argon2id password hashes, sign-in with lock-out, environment access.

Used by the sign-in page, ``segments console-user add``, the development runner and the
Settings page. Hashing costs ~50-100 ms of CPU (argon2-cffi's RFC 9106 low-memory profile),
so it runs in a thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from shared.db import Conn

#: Consecutive failed sign-ins that lock an account, and for how long.
MAX_FAILURES = 5
LOCK_MINUTES = 15
MIN_PASSWORD = 8

_hasher = PasswordHasher()  # argon2id
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_dummy_hash: str | None = None


class AccountError(ValueError):
    """A refused account change, with the field it is about."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class SignIn:
    """The outcome of a sign-in: ``account_id`` when it succeeded, else why not."""

    account_id: int | None
    locked_minutes: int = 0


def normalise_email(email: str) -> str:
    """The email as stored (trimmed); 'not an email' is an :class:`AccountError`."""
    email = email.strip()
    if not _EMAIL.match(email) or len(email) > 320:
        raise AccountError("Email: enter an address like ada@example.com", "email")
    return email


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"Password: at least {MIN_PASSWORD} characters", "password")
    if len(password) > 1024:
        raise AccountError("Password: at most 1024 characters", "password")


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


def _verify(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def save_account(conn: Conn, email: str, password: str, env_ids: list[int]) -> int:
    """Create the account ``email`` (or set its password when it exists), give it access to
    ``env_ids`` and unlock it; returns its id."""
    email = normalise_email(email)
    check_password(password)
    hashed = await hash_password(password)
    async with conn.transaction():
        account_id: int = await conn.fetchval(
            """INSERT INTO console_accounts (email, password_hash) VALUES ($1, $2)
               ON CONFLICT (lower(email)) DO UPDATE
                 SET password_hash = EXCLUDED.password_hash, failed_attempts = 0,
                     locked_until = NULL
               RETURNING id""",
            email,
            hashed,
        )
        await grant(conn, account_id, env_ids)
    return account_id


async def add_to_environment(conn: Conn, email: str, password: str, env_id: int) -> bool:
    """The Settings page's "add account": an existing account is given access to ``env_id``
    (its password untouched: nobody resets another person's password from here); a new one
    is created with ``password``. True when it was created."""
    email = normalise_email(email)
    existing = await conn.fetchval(
        "SELECT id FROM console_accounts WHERE lower(email) = lower($1)", email
    )
    if existing is not None:
        await grant(conn, existing, [env_id])
        return False
    await save_account(conn, email, password, [env_id])
    return True


async def grant(conn: Conn, account_id: int, env_ids: list[int]) -> None:
    """Let an account see these environments (already granted ones are kept)."""
    await conn.execute(
        """INSERT INTO console_account_environments (env_id, account_id)
           SELECT unnest($2::bigint[]), $1 ON CONFLICT DO NOTHING""",
        account_id,
        env_ids,
    )


async def sign_in(pool: asyncpg.Pool, email: str, password: str) -> SignIn:
    """Check a password. ``MAX_FAILURES`` wrong ones in a row lock the account for
    ``LOCK_MINUTES`` (a locked account is refused even with the right password). An unknown
    email costs one hash too, so timing does not tell which addresses exist."""
    global _dummy_hash
    row = await pool.fetchrow(
        """SELECT id, password_hash, locked_until FROM console_accounts
           WHERE lower(email) = lower($1)""",
        email.strip(),
    )
    if row is None:
        if _dummy_hash is None:
            _dummy_hash = await hash_password("not a password of anyone")
        await asyncio.to_thread(_verify, _dummy_hash, password)
        return SignIn(None)
    now = datetime.now(UTC)
    locked_until: datetime | None = row["locked_until"]
    if locked_until is not None and locked_until > now:
        return SignIn(None, locked_minutes=_minutes(locked_until - now))
    if await asyncio.to_thread(_verify, row["password_hash"], password):
        await pool.execute(
            """UPDATE console_accounts SET failed_attempts = 0, locked_until = NULL
               WHERE id = $1""",
            row["id"],
        )
        return SignIn(row["id"])
    # one statement, so that concurrent wrong guesses all count
    failed = await pool.fetchrow(
        """UPDATE console_accounts
           SET failed_attempts = failed_attempts + 1,
               locked_until = CASE WHEN failed_attempts + 1 >= $2
                                   THEN now() + make_interval(mins => $3) END
           WHERE id = $1 RETURNING locked_until""",
        row["id"],
        MAX_FAILURES,
        LOCK_MINUTES,
    )
    if failed is not None and failed["locked_until"] is not None:
        return SignIn(None, locked_minutes=LOCK_MINUTES)
    return SignIn(None)


def _minutes(left: timedelta) -> int:
    return max(1, int(left.total_seconds() + 59) // 60)


@dataclass(frozen=True, slots=True)
class EnvironmentChoice:
    id: int
    name: str


async def environments_of(conn: Conn | asyncpg.Pool, account_id: int) -> list[EnvironmentChoice]:
    """The environments an account sees, by name."""
    rows = await conn.fetch(
        """SELECT e.id, e.name FROM console_account_environments ae
           JOIN environments e ON e.id = ae.env_id
           WHERE ae.account_id = $1 ORDER BY e.name""",
        account_id,
    )
    return [EnvironmentChoice(r["id"], r["name"]) for r in rows]
