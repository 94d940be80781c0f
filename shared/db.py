"""PostgreSQL connection pools (asyncpg), with JSON codecs built once."""

from __future__ import annotations

from typing import Any, TypeAlias

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

_json_encoder = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder()


def _encode_json(value: Any) -> str:
    return _json_encoder.encode(value).decode()


async def _init_connection(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name, encoder=_encode_json, decoder=_json_decoder.decode, schema="pg_catalog"
        )


async def create_pool(dsn: str, *, size: int = 10) -> asyncpg.Pool:
    """Open a pool whose connections decode json/jsonb to Python objects (and back)."""
    pool = await asyncpg.create_pool(
        dsn, min_size=1, max_size=size, init=_init_connection, command_timeout=60
    )
    assert pool is not None
    return pool


#: A connection, whether taken from a pool or opened alone (what query helpers accept).
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"
