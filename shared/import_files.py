"""An import's file, kept in PostgreSQL in chunks of about 1 MB (``import_chunks``): written
by the admin service as the upload streams in, read back in order by the worker. PostgreSQL
holds it so that any worker can process or resume the import, and a backup holds it too."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg

from shared.db import Conn

#: Bytes per stored chunk: large enough that a 200 MB file is 200 rows, small enough that
#: reading one is a short statement.
CHUNK_BYTES = 1 << 20


async def write_chunk(conn: Conn, env_id: int, import_id: int, seq: int, data: bytes) -> None:
    await conn.execute(
        "INSERT INTO import_chunks (env_id, import_id, seq, data) VALUES ($1, $2, $3, $4)",
        env_id,
        import_id,
        seq,
        data,
    )


async def read_chunks(
    conn: Conn | asyncpg.Pool, env_id: int, import_id: int
) -> AsyncIterator[bytes]:
    """The file's chunks in order, one statement each (constant memory)."""
    seq = 0
    while True:
        data: bytes | None = await conn.fetchval(
            "SELECT data FROM import_chunks WHERE env_id = $1 AND import_id = $2 AND seq = $3",
            env_id,
            import_id,
            seq,
        )
        if data is None:
            return
        yield data
        seq += 1


async def delete_file(conn: Conn, env_id: int, import_id: int) -> None:
    """Forget the file once the import has ended (its rejected rows are kept apart)."""
    await conn.execute(
        "DELETE FROM import_chunks WHERE env_id = $1 AND import_id = $2", env_id, import_id
    )
