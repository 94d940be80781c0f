"""Imports in PostgreSQL: read, list, start, cancel, and the rejected rows as CSV.

The worker (:mod:`services.worker.imports`) takes a ``processing`` import over with a lease,
so starting one is only a status change; cancelling one stops it at the worker's next batch
(rows applied before that stay applied)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec

from services.admin.csv_out import CsvLines
from services.admin.imports.schemas import Import, ImportStart
from services.admin.segments.service import as_id
from shared.db import Conn
from shared.http import ApiError
from shared.import_files import delete_file
from shared.import_mapping import ColumnMapping, MappingError, check_mapping

_COLUMNS = """id, kind, status, file_name, segment_key, delimiter, columns, preview, mapping,
              size_bytes, rows_total, rows_done, created, updated, unchanged, rejected, error,
              created_at, started_at, finished_at"""


def to_import(row: asyncpg.Record) -> Import:
    return Import(
        id=str(row["id"]),
        kind=row["kind"],
        status=row["status"],
        fileName=row["file_name"],
        segment=row["segment_key"],
        delimiter=row["delimiter"],
        columns=row["columns"],
        preview=row["preview"],
        mapping=row["mapping"],
        sizeBytes=row["size_bytes"],
        rowsTotal=row["rows_total"],
        rowsDone=row["rows_done"],
        created=row["created"],
        updated=row["updated"],
        unchanged=row["unchanged"],
        rejected=row["rejected"],
        error=row["error"],
        createdAt=row["created_at"],
        startedAt=row["started_at"],
        finishedAt=row["finished_at"],
    )


def import_id(ref: str) -> int:
    """The id in a path; 404 when it cannot be one."""
    found = as_id(ref)
    if found is None:
        raise ApiError(404, f"import: no import {ref!r}", "import")
    return found


async def find_import(
    conn: Conn | asyncpg.Pool, env_id: int, ref: str, *, lock: bool = False
) -> asyncpg.Record:
    """The import ``ref`` of the environment, or a 404."""
    sql = f"SELECT {_COLUMNS} FROM imports WHERE env_id = $1 AND id = $2"
    row = await conn.fetchrow(sql + (" FOR UPDATE" if lock else ""), env_id, import_id(ref))
    if row is None:
        raise ApiError(404, f"import: no import {ref!r}", "import")
    return row


async def list_imports(
    conn: Conn | asyncpg.Pool, env_id: int, limit: int, before: int | None
) -> tuple[list[Import], str | None]:
    """A page of imports, newest first, and the cursor of the next page."""
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM imports WHERE env_id = $1 AND ($2::bigint IS NULL OR id < $2)
            ORDER BY id DESC LIMIT $3""",
        env_id,
        before,
        limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return [to_import(r) for r in rows], (str(rows[-1]["id"]) if more else None)


async def start_import(conn: Conn, env_id: int, ref: str, body: ImportStart) -> Import:
    """Check the mapping and hand a draft to the worker: 409 unless a draft, 422 naming the
    column whose mapping cannot be used."""
    async with conn.transaction():
        row = await find_import(conn, env_id, ref, lock=True)
        if row["status"] != "draft":
            raise ApiError(409, f"import: it is {row['status']}, not a draft", "import")
        wanted = body.mapping
        if wanted is None:
            wanted = msgspec.convert(row["mapping"], dict[str, ColumnMapping])
        try:
            mapping = check_mapping(row["kind"], row["columns"], wanted, row["segment_key"])
        except MappingError as exc:
            raise ApiError(422, exc.message, exc.field) from exc
        updated = await conn.fetchrow(
            f"""UPDATE imports SET status = 'processing', mapping = $3, started_at = now()
                WHERE env_id = $1 AND id = $2 RETURNING {_COLUMNS}""",
            env_id,
            row["id"],
            msgspec.to_builtins(mapping),
        )
    assert updated is not None
    return to_import(updated)


async def cancel_import(conn: Conn, env_id: int, ref: str) -> Import:
    """Cancel a draft or a processing import (409 once it has ended); its file is deleted."""
    async with conn.transaction():
        row = await find_import(conn, env_id, ref, lock=True)
        if row["status"] not in ("draft", "processing"):
            raise ApiError(409, f"import: it is {row['status']} already", "import")
        updated = await conn.fetchrow(
            f"""UPDATE imports SET status = 'cancelled', finished_at = now(), lease_owner = NULL,
                                   lease_until = NULL
                WHERE env_id = $1 AND id = $2 RETURNING {_COLUMNS}""",
            env_id,
            row["id"],
        )
        await delete_file(conn, env_id, row["id"])
    assert updated is not None
    return to_import(updated)


async def rejected_csv(pool: asyncpg.Pool, env_id: int, row: Any) -> AsyncIterator[bytes]:
    """The rejected rows of import ``row``: its columns and ``error``, in file order, read by
    a server-side cursor (constant memory). A row with more cells than the header has
    columns keeps them all: the header gains unnamed columns (``extra 1``, ...) so that
    ``error`` stays the last column of every line."""
    lines = CsvLines()
    columns = list(row["columns"])
    async with pool.acquire() as conn, conn.transaction():
        widest = await conn.fetchval(
            """SELECT max(jsonb_array_length(cells)) FROM import_rejects
               WHERE env_id = $1 AND import_id = $2""",
            env_id,
            row["id"],
        )
        extra = max(0, (widest or 0) - len(columns))
        columns += [f"extra {n}" for n in range(1, extra + 1)]
        width = len(columns)
        yield lines.encode([[*columns, "error"]])
        batch: list[list[str]] = []
        async for reject in conn.cursor(
            """SELECT cells, error FROM import_rejects WHERE env_id = $1 AND import_id = $2
               ORDER BY row_number""",
            env_id,
            row["id"],
            prefetch=1000,
        ):
            cells = list(reject["cells"])
            cells += [""] * (width - len(cells))
            batch.append([*cells, reject["error"]])
            if len(batch) >= 1000:
                yield lines.encode(batch)
                batch.clear()
        if batch:
            yield lines.encode(batch)
