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


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release without a reset round trip (asyncpg still rolls back an open transaction)."""


async def create_pool(
    dsn: str, *, size: int = 10, reset_session: bool = True, command_timeout: float | None = 60
) -> asyncpg.Pool:
    """Open a pool whose connections decode json/jsonb to Python objects (and back).

    ``reset_session=False`` skips asyncpg's reset on release (``RESET ALL``, advisory unlock,
    ``CLOSE ALL``, ``UNLISTEN *``: one more round trip per release). Only for services whose
    code never changes session state (ingest, query): they release a connection per request
    or flush, and that round trip cost ingest about a tenth of its CPU. ``command_timeout``:
    seconds a statement may take before the client gives up on it (None: no limit, for
    benchmarks that load millions of rows)."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=size,
        init=_init_connection,
        command_timeout=command_timeout,
        reset=None if reset_session else _keep_session,
    )
    assert pool is not None
    return pool


#: A connection, whether taken from a pool or opened alone (what query helpers accept).
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"
