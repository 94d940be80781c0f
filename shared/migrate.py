"""Plain SQL migrations: ``shared/migrations/NNN_name.sql``, applied in order and recorded."""

from __future__ import annotations

import re
from pathlib import Path

from shared.db import Conn

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
# Any constant works; it only serialises concurrent migrators.
_LOCK_ID = 7_413_001


def migration_files() -> list[tuple[int, Path]]:
    """The migration files, by number. Two files with one number are an error."""
    found: dict[int, Path] = {}
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise RuntimeError(f"migration file name not of the form NNN_name.sql: {path.name}")
        number = int(match.group(1))
        if number in found:
            raise RuntimeError(f"two migrations numbered {number}")
        found[number] = path
    return sorted(found.items())


async def migrate(conn: Conn) -> list[str]:
    """Apply the migrations not yet recorded; return the names applied."""
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for number, path in migration_files():
            if number in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    number,
                    path.name,
                )
            applied.append(path.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    return applied
