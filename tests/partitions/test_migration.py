"""Migration 060 on a database that already holds rows: every row is kept, in the partition
of its time, with its id; the sequences go on after them; messageIds stay deduplicated."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec
import pytest

from services.worker.drain import first_new
from shared.messages import normalise, wire_decoder
from shared.migrate import migrate
from tests.conftest import _server_dsns

BEFORE = 59  # the last migration number before the partitioned tables


@pytest.fixture
async def old_db() -> AsyncIterator[asyncpg.Connection]:
    admin_dsn, template = _server_dsns()
    name = f"segments_mig060_{os.getpid()}_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    conn = await asyncpg.connect(template.format(db=name))
    try:
        await migrate(conn, through=BEFORE)
        yield conn
    finally:
        await conn.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


_CHANGES = "SELECT id, env_id, segment_id, user_pk, entered, cause, at FROM membership_changes"
_DELIVERIES = """SELECT id, env_id, webhook_id, change_id, payload, status, attempts,
                        next_attempt_at, created_at FROM webhook_deliveries"""


async def test_migration_keeps_existing_rows(old_db: asyncpg.Connection) -> None:
    db = old_db
    env = await db.fetchval(
        """INSERT INTO environments (name, write_key, secret_key_hash)
           VALUES ('old', 'wk_old', 'x') RETURNING id"""
    )
    webhook = await db.fetchval(
        "INSERT INTO webhooks (env_id, url, secret) VALUES ($1, 'http://x', 's') RETURNING id",
        env,
    )
    now = datetime.now(UTC)
    ages = [timedelta(days=d) for d in (200, 95, 40, 8, 2, 0)]
    for age in ages:
        await db.execute(
            "INSERT INTO processed_messages (env_id, message_id, processed_at) VALUES ($1, $2, $3)",
            env,
            f"m-{age.days}",
            now - age,
        )
        change = await db.fetchval(
            """INSERT INTO membership_changes (env_id, segment_id, user_pk, entered, cause, at)
               VALUES ($1, 1, 2, true, 'message', $2) RETURNING id""",
            env,
            now - age,
        )
        await db.execute(
            """INSERT INTO webhook_deliveries (env_id, webhook_id, change_id, payload, created_at)
               VALUES ($1, $2, $3, '{"a": 1}', $4)""",
            env,
            webhook,
            change,
            now - age,
        )
    changes = await db.fetch(_CHANGES + " ORDER BY id")
    deliveries = await db.fetch(_DELIVERIES + " ORDER BY id")

    assert "060_partitioned_history.sql" in await migrate(db)

    assert await db.fetch(_CHANGES + " ORDER BY id") == changes
    assert await db.fetch(_DELIVERIES + " ORDER BY id") == deliveries
    for table in ("processed_messages", "membership_changes", "webhook_deliveries"):
        kind = await db.fetchval(
            "SELECT relkind::text FROM pg_class WHERE oid = $1::regclass", table
        )
        assert kind == "p"
        # every row in the partition of its period: the default ones are empty
        assert await db.fetchval(f"SELECT count(*) FROM {table}_default") == 0
        spread = await db.fetchval(f"SELECT count(DISTINCT tableoid) FROM {table}")
        assert spread >= 4
    # ids go on after the copied ones
    new_change = await db.fetchval(
        """INSERT INTO membership_changes (env_id, segment_id, user_pk, entered, cause)
           VALUES ($1, 1, 2, false, 'message') RETURNING id""",
        env,
    )
    assert new_change > changes[-1]["id"]
    new_delivery = await db.fetchval(
        """INSERT INTO webhook_deliveries (env_id, webhook_id, change_id, payload)
           VALUES ($1, $2, $3, '{}') RETURNING id""",
        env,
        webhook,
        new_change,
    )
    assert new_delivery > deliveries[-1]["id"]
    # the messageIds recorded before the migration are still known
    wire = {"type": "identify", "userId": "u", "traits": {}}
    msgs = [
        normalise(wire_decoder.decode(msgspec.json.encode({**wire, "messageId": m})), now)
        for m in ("m-8", "m-2", "m-0", "brand-new")
    ]
    async with db.transaction():
        fresh = await first_new(db, [(env, i, m) for i, m in enumerate(msgs)])
    assert [m.messageId for _, _, m in fresh] == ["brand-new"]
