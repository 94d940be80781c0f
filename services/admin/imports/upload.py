"""Receiving an import's file: the request body streamed (raw ``text/csv`` or the multipart
field ``file``) into PostgreSQL chunks while an incremental CSV reader checks the encoding,
counts the rows and keeps the first ones for the preview. Constant memory whatever the size;
the size limit (``SEGMENTS_IMPORT_MAX_BYTES``) answers 413 as soon as it is passed. The draft
and its file are one transaction: a refused upload leaves nothing behind."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import Request
from multipart import MultipartSegment, ParserError, PushMultipartParser

from shared.csv_read import CsvError, CsvStream
from shared.db import Conn
from shared.http import ApiError
from shared.import_files import CHUNK_BYTES, write_chunk
from shared.import_mapping import suggest_mapping
from shared.settings import env_var

#: Data rows a draft shows.
PREVIEW_ROWS = 10


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"file: larger than the import size limit of {limit / 1_000_000:g} MB "
        f"(set by {env_var('import_max_bytes')})",
        "file",
    )


async def _limited(request: Request[Any, Any, Any], limit: int) -> AsyncIterator[bytes]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise _too_large(limit)  # refused before reading (multipart framing allowed for)
    async for piece in request.stream():
        yield piece


async def _multipart_file(body: AsyncIterator[bytes], boundary: str) -> AsyncIterator[bytes]:
    """The content of the multipart field ``file``, streamed."""
    in_file = found = False
    try:
        with PushMultipartParser(boundary, max_segment_count=20) as parser:
            async for piece in body:
                for part in parser.parse(piece):
                    if isinstance(part, MultipartSegment):
                        in_file = part.name == "file" and not found
                        found = found or in_file
                    elif part:
                        if in_file:
                            yield bytes(part)
                    else:
                        in_file = False
                if parser.closed:
                    break
            for _ in parser.parse(b""):
                pass
    except ParserError as exc:
        raise ApiError(400, f"file: not a valid multipart/form-data body: {exc}", "file") from exc
    if not found:
        raise ApiError(422, "file: send the CSV as the multipart field 'file'", "file")


def file_stream(
    request: Request[Any, Any, Any], limit: int
) -> tuple[AsyncIterator[bytes], str | None]:
    """(the file's bytes, its name when the client gave one) of an upload request."""
    content_type = request.headers.get("content-type", "")
    body = _limited(request, limit)
    if content_type.lower().startswith("multipart/form-data"):
        boundary = content_type.partition("boundary=")[2].split(";")[0].strip().strip('"')
        if not boundary:
            raise ApiError(400, "file: multipart body without a boundary", "file")
        return _multipart_file(body, boundary), None
    return body, request.query_params.get("fileName")


async def store_upload(
    conn: Conn,
    env_id: int,
    kind: str,
    segment: str | None,
    file_name: str | None,
    body: AsyncIterator[bytes],
    limit: int,
) -> int:
    """Create a draft import of ``kind`` holding the file ``body``; returns its id. 413 past
    ``limit`` bytes, 422 for a file that cannot be read (naming its encoding, or saying it is
    empty). Runs in a transaction of its own."""
    async with conn.transaction():
        import_id: int = await conn.fetchval(
            """INSERT INTO imports (env_id, kind, segment_key, file_name, delimiter, columns,
                                    preview, mapping, size_bytes, rows_total)
               VALUES ($1, $2, $3, $4, ',', '[]', '[]', '{}', 0, 0) RETURNING id""",
            env_id,
            kind,
            segment,
            file_name,
        )
        reader = CsvStream()
        preview: list[list[str]] = []
        buffer = bytearray()
        size = seq = 0

        async def flush() -> None:
            nonlocal seq
            await write_chunk(conn, env_id, import_id, seq, bytes(buffer))
            seq += 1
            buffer.clear()

        try:
            async for piece in body:
                size += len(piece)
                if size > limit:
                    raise _too_large(limit)
                records = reader.feed(piece)
                if len(preview) < PREVIEW_ROWS:
                    preview.extend(records[: PREVIEW_ROWS - len(preview)])
                buffer += piece
                if len(buffer) >= CHUNK_BYTES:
                    await flush()
            records = reader.close()
        except CsvError as exc:
            raise ApiError(422, exc.message, "file") from exc
        if len(preview) < PREVIEW_ROWS:
            preview.extend(records[: PREVIEW_ROWS - len(preview)])
        if buffer:
            await flush()
        if reader.header is None:
            raise ApiError(422, "file: the file is empty: the first line names the columns", "file")
        mapping = suggest_mapping(kind, reader.header)
        await conn.execute(
            """UPDATE imports SET delimiter = $3, columns = $4, preview = $5, mapping = $6,
                                  size_bytes = $7, rows_total = $8
               WHERE env_id = $1 AND id = $2""",
            env_id,
            import_id,
            reader.delimiter or ",",
            reader.header,
            preview,
            msgspec.to_builtins(mapping),
            size,
            reader.rows,
        )
    return import_id
