"""CSV exports, streamed for any size: a segment's members (``userId``, ``enteredAt`` and
chosen attributes) and the users matching a filter (``columns=userId,email,<attribute>...``).

Rows come from a server-side cursor (a few thousand at a time), are written as CSV with every
cell escaped against formula injection (:mod:`shared.csv_cells`) and sent as they are
written: memory stays flat whatever the size. Values are written so that importing the file
back gives the same values: numbers as JSON numbers, booleans as true/false, lists as JSON
arrays, dates as stored. Anonymous profiles (no userId) are not exported.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
from litestar.response import Stream

from services.admin.csv_out import CSV_MEDIA_TYPE, CsvLines
from services.admin.queries.service import filter_where
from shared.http import ApiError

_json = msgspec.json.Encoder()
#: Columns that are not attributes.
_TIMES = {"firstSeenAt": "first_seen_at", "lastSeenAt": "last_seen_at"}
MAX_COLUMNS = 200
_FETCH = 2000


def cell(value: Any) -> str:
    """An attribute value as a CSV cell (empty when absent)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    return _json.encode(value).decode()


def parse_columns(raw: str | None, default: list[str], special: set[str]) -> list[str]:
    """The ``columns`` parameter as a list (``default`` when absent); 400 when empty or too
    long. Names in ``special`` are the export's own columns, the others attributes."""
    if raw is None:
        return default
    columns = list(dict.fromkeys(c.strip() for c in raw.split(",") if c.strip()))
    if not columns:
        raise ApiError(400, "columns: name at least one column", "columns")
    if len(columns) > MAX_COLUMNS:
        raise ApiError(400, f"columns: at most {MAX_COLUMNS}", "columns")
    if not special & set(columns) and "userId" in special:
        columns.insert(0, "userId")  # a row must say whose it is
    return columns


async def user_attribute_names(conn: asyncpg.Pool, env_id: int) -> list[str]:
    """Every user attribute the environment has seen, by name."""
    rows = await conn.fetch(
        "SELECT name FROM attribute_types WHERE env_id = $1 AND scope = 'user' ORDER BY name",
        env_id,
    )
    return [r["name"] for r in rows]


def _row(record: asyncpg.Record, columns: list[str]) -> list[str]:
    attributes = record["attributes"]
    out = []
    for column in columns:
        if column == "userId":
            out.append(record["user_id"])
        elif column == "enteredAt":
            out.append(cell(record["since"]))
        elif column in _TIMES:
            out.append(cell(record[_TIMES[column]]))
        else:
            out.append(cell(attributes.get(column)))
    return out


async def stream_csv(
    pool: asyncpg.Pool, columns: list[str], sql: str, *params: Any
) -> AsyncIterator[bytes]:
    """CSV of ``columns`` over the rows of ``sql`` (which selects user_id, attributes,
    first_seen_at, last_seen_at and, for members, since), read by a server-side cursor."""
    lines = CsvLines()
    yield lines.encode([columns])
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        await conn.execute("SET LOCAL jit = off")
        batch: list[list[str]] = []
        async for record in conn.cursor(sql, *params, prefetch=_FETCH):
            batch.append(_row(record, columns))
            if len(batch) >= _FETCH:
                yield lines.encode(batch)
                batch.clear()
        if batch:
            yield lines.encode(batch)


MEMBERS_SQL = """
SELECT u.user_id, u.attributes, u.first_seen_at, u.last_seen_at, m.since
FROM memberships m JOIN users u ON u.env_id = m.env_id AND u.id = m.user_pk
WHERE m.env_id = $1 AND m.segment_id = $2 AND u.user_id IS NOT NULL
ORDER BY m.user_pk
"""


def users_sql(where: str) -> str:
    """The users export's statement for a compiled filter ``where`` (its parameters from $2)."""
    return f"""SELECT u.user_id, u.attributes, u.first_seen_at, u.last_seen_at
               FROM users u WHERE u.env_id = $1 AND u.user_id IS NOT NULL AND {where}
               ORDER BY u.id"""


def _attachment(content: AsyncIterator[bytes], name: str) -> Stream:
    return Stream(
        content,
        media_type=CSV_MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
    )


async def users_export(
    pool: asyncpg.Pool, env_id: int, condition: Any | None, columns_raw: str | None
) -> Stream:
    """``GET /v1/users?format=csv``: the identified users matching ``condition``."""
    where, params = await filter_where(pool, env_id, condition, 2)
    names = await user_attribute_names(pool, env_id)
    columns = parse_columns(columns_raw, ["userId", *names], {"userId"})
    return _attachment(stream_csv(pool, columns, users_sql(where), env_id, *params), "users")


async def members_export(
    pool: asyncpg.Pool, env_id: int, segment_id: int, key: str, columns_raw: str | None
) -> Stream:
    """``GET /v1/segments/{segment}/members?format=csv``: the members, with when they entered."""
    columns = parse_columns(columns_raw, ["userId", "enteredAt"], {"userId"})
    return _attachment(stream_csv(pool, columns, MEMBERS_SQL, env_id, segment_id), key)
