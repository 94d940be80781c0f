"""Plain SQL migrations: ``shared/migrations/NNN_name.sql``, applied in order and recorded;
and the few SQL functions whose bodies are generated from Python, kept equal to the code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

from shared.conditions import sql_coerce
from shared.db import Conn

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
# Any constant works; it only serialises concurrent migrators.
_LOCK_ID = 7_413_001


class Generated(NamedTuple):
    """A function declared by a migration whose body is generated from Python (the SQL twin
    of a Python rule), with the statements that recompute what it fills."""

    signature: str  # as regprocedure reads it
    header: str  # CREATE OR REPLACE FUNCTION <header> AS <body>
    body: str
    refill: tuple[str, ...]


def _refill_epochs(table: str) -> str:
    return (
        f"UPDATE {table} SET epochs = segments_iso_epochs(attributes) "
        "WHERE epochs IS DISTINCT FROM segments_iso_epochs(attributes)"
    )


GENERATED = (
    Generated(
        sql_coerce.ISO_EPOCHS_FUNCTION,
        sql_coerce.ISO_EPOCHS_HEADER,
        sql_coerce.iso_epochs_body(),
        (_refill_epochs("users"), _refill_epochs("companies")),
    ),
)


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


async def migrate(conn: Conn, *, through: int | None = None) -> list[str]:
    """Apply the migrations not yet recorded (those numbered up to ``through`` only, when
    given: tests of a migration on a database holding data); return the names applied."""
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
            if number in done or (through is not None and number > through):
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    number,
                    path.name,
                )
                # in the transaction that declares a generated function, so that its
                # placeholder body is never seen by anyone else
                await sync_generated(conn)
            applied.append(path.name)
        async with conn.transaction():
            await sync_generated(conn)  # the code's body may have changed with no migration
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    return applied


async def sync_generated(conn: Conn) -> list[str]:
    """Give each generated function that exists the body the code generates, when the
    database holds another, and recompute what it fills; return the signatures replaced."""
    replaced = []
    for g in GENERATED:
        body = await conn.fetchval(
            "SELECT prosrc FROM pg_proc WHERE oid = to_regprocedure($1)", g.signature
        )
        if body is None or body == g.body:
            continue  # not declared yet (an earlier migration), or up to date
        assert "$generated$" not in g.body
        await conn.execute(
            f"CREATE OR REPLACE FUNCTION {g.header} AS $generated${g.body}$generated$"
        )
        for statement in g.refill:
            await conn.execute(statement)
        replaced.append(g.signature)
    return replaced
