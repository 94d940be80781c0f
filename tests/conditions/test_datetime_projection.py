"""``users.epochs`` and ``companies.epochs``: the ISO datetime strings of ``attributes``
parsed by PostgreSQL (migration 004's triggers, calling the function whose body
shared.migrate generates from sql_coerce) into ``{name: epoch microseconds}``, exactly as the
Python engine reads them (coerce.iso_us)."""

from __future__ import annotations

import itertools
from typing import Any

import asyncpg

from shared.conditions.coerce import iso_us
from shared.conditions.sql_coerce import ISO_EPOCHS_FUNCTION, iso_epochs_body
from shared.environments import EnvironmentKeys
from shared.migrate import sync_generated
from tests.conditions.test_injection import HOSTILE

SIGNED = "2024-03-01T10:00:00Z"
SIGNED_US = 1_709_287_200_000_000


def expected(attributes: dict[str, Any]) -> dict[str, int]:
    """What ``epochs`` must hold for ``attributes``, by the Python rule."""
    out = {}
    for name, value in attributes.items():
        if isinstance(value, str) and (us := iso_us(value)) is not None:
            out[name] = us
    return out


async def insert_user(db: asyncpg.Pool, env_id: int, attributes: dict[str, Any]) -> int:
    pk: int = await db.fetchval(
        """INSERT INTO users (env_id, user_id, attributes, first_seen_at, last_seen_at)
           VALUES ($1, NULL, $2, now(), now()) RETURNING id""",
        env_id,
        attributes,
    )
    return pk


async def user_epochs(db: asyncpg.Pool, env_id: int, pk: int) -> dict[str, Any]:
    epochs: dict[str, Any] = await db.fetchval(
        "SELECT epochs FROM users WHERE env_id = $1 AND id = $2", env_id, pk
    )
    return epochs


def _iso_texts() -> list[str]:
    """Valid and invalid ISO-like strings around every edge the rule has."""
    dates = [
        f"{y}-{m}-{d}"
        for y in ("0000", "0001", "1969", "1970", "2000", "1900", "2023", "2024", "9999")
        for m in ("00", "01", "02", "04", "12", "13")
        for d in ("00", "01", "28", "29", "30", "31", "32")
    ]
    times = ["", "T00:00", "t23:59", " 12:30", "T24:00", "T10:60", "T10:00:59", "T10:00:60"]
    times += ["T10:00:00.5", "T10:00:00,123456789", "T10:00:00.", "T1:00", "T10:00:00.1234567"]
    zones = ["", "Z", "z", "+00:00", "-02:30", "+0530", "+14", "-23:59", "+24:00", "+01:60"]
    zones += ["+1", "-02:3", "Z ", "+01:00:00"]
    texts = [d + t + z for d, t, z in itertools.product(dates, times, zones) if t or not z]
    texts += ["2024-3-1", "20240301", "2024-03-01T", "2024-03-01T10", " 2024-03-01", "x", ""]
    return texts


async def test_projection_parses_as_python_does(db: asyncpg.Pool) -> None:
    texts = _iso_texts()
    attributes = {str(i): t for i, t in enumerate(texts)}
    epochs = await db.fetchval("SELECT segments_iso_epochs($1::jsonb)", attributes)
    parsed = {texts[int(k)]: v for k, v in epochs.items()}
    assert parsed == expected(dict(zip(texts, texts, strict=True)))
    assert 1000 < len(parsed) < len(texts)  # both kinds were tried


async def test_insert_fills_epochs(db: asyncpg.Pool, env: EnvironmentKeys) -> None:
    attributes: dict[str, Any] = {
        "signed": SIGNED,
        "day": "2024-02-29",
        "bad_day": "2023-02-29",
        "text": "hello",
        "epoch": 1709251200,  # a number: read from attributes, not projected
        "flag": True,
        "none": None,
        "list": ["2024-03-01"],
        "object": {"at": "2024-03-01"},
    }
    pk = await insert_user(db, env.id, attributes)
    assert await user_epochs(db, env.id, pk) == {"signed": SIGNED_US, "day": 1709164800000000}
    assert await user_epochs(db, env.id, await insert_user(db, env.id, {})) == {}


async def test_attribute_changes_refresh_epochs(db: asyncpg.Pool, env: EnvironmentKeys) -> None:
    pk = await insert_user(db, env.id, {"a": SIGNED, "b": "2024-01-01", "c": "x"})
    changes: list[dict[str, Any]] = [
        {"a": "2024-03-01T10:00:00+01:00", "b": "2024-01-01", "c": "x"},  # changed
        {"a": "2024-03-01T10:00:00+01:00", "c": "2025-01-01"},  # removed b, c now a date
        {"a": 5, "c": "2025-01-01", "d": SIGNED},  # a no longer a string, d added
        {},
    ]
    for attributes in changes:
        await db.execute(
            "UPDATE users SET attributes = $3 WHERE env_id = $1 AND id = $2",
            env.id,
            pk,
            attributes,
        )
        assert await user_epochs(db, env.id, pk) == expected(attributes)
    await db.execute(
        """UPDATE users SET attributes = attributes || jsonb_build_object('e', $3::text)
           WHERE env_id = $1 AND id = $2""",
        env.id,
        pk,
        SIGNED,
    )
    assert await user_epochs(db, env.id, pk) == {"e": SIGNED_US}


async def test_updates_that_keep_attributes_do_not_parse(
    db: asyncpg.Pool, env: EnvironmentKeys
) -> None:
    """A stand-in value written straight into ``epochs`` survives every update that leaves
    ``attributes`` as they are: the trigger did not run (no parsing cost)."""
    pk = await insert_user(db, env.id, {"a": SIGNED})
    stand_in = {"stand-in": 1}
    await db.execute(
        "UPDATE users SET epochs = $3 WHERE env_id = $1 AND id = $2", env.id, pk, stand_in
    )
    for change in [
        "membership_version = membership_version + 1",
        "last_seen_at = now(), updated_at = now()",
        "attributes = attributes",  # set, but not changed
        "attributes = $3",
    ]:
        await db.execute(
            f"UPDATE users SET {change} WHERE env_id = $1 AND id = $2 AND $3::jsonb IS NOT NULL",
            env.id,
            pk,
            {"a": SIGNED},
        )
        assert await user_epochs(db, env.id, pk) == stand_in, change
    await db.execute(
        "UPDATE users SET attributes = $3 WHERE env_id = $1 AND id = $2",
        env.id,
        pk,
        {"a": SIGNED, "b": 1},
    )
    assert await user_epochs(db, env.id, pk) == {"a": SIGNED_US}


async def test_companies_too(db: asyncpg.Pool, env: EnvironmentKeys) -> None:
    pk = await db.fetchval(
        """INSERT INTO companies (env_id, company_id, attributes) VALUES ($1, 'acme', $2)
           RETURNING id""",
        env.id,
        {"renewal": SIGNED, "plan": "pro"},
    )

    async def epochs() -> Any:
        return await db.fetchval(
            "SELECT epochs FROM companies WHERE env_id = $1 AND id = $2", env.id, pk
        )

    assert await epochs() == {"renewal": SIGNED_US}
    await db.execute(
        "UPDATE companies SET attributes = $3 WHERE env_id = $1 AND id = $2",
        env.id,
        pk,
        {"plan": "2024-01-01", "renewal": "soon"},
    )
    assert await epochs() == {"plan": 1704067200000000}
    await db.execute(
        "UPDATE companies SET updated_at = now() WHERE env_id = $1 AND id = $2", env.id, pk
    )
    assert await epochs() == {"plan": 1704067200000000}


async def test_hostile_names_are_just_keys(db: asyncpg.Pool, env: EnvironmentKeys) -> None:
    attributes: dict[str, Any] = {name: SIGNED for name in [*HOSTILE, "", " ", "{}", "a.b"]}
    attributes["'); DROP TABLE users; -- text"] = "not a date"
    pk = await insert_user(db, env.id, attributes)
    assert await user_epochs(db, env.id, pk) == expected(attributes)
    assert len(expected(attributes)) == len(attributes) - 1


async def test_database_body_is_the_generated_one(db: asyncpg.Pool) -> None:
    body = await db.fetchval(
        "SELECT prosrc FROM pg_proc WHERE oid = to_regprocedure($1)", ISO_EPOCHS_FUNCTION
    )
    assert body == iso_epochs_body()


async def test_a_stale_body_is_replaced_and_epochs_refilled(
    db: asyncpg.Pool, env: EnvironmentKeys
) -> None:
    pk = await insert_user(db, env.id, {"a": SIGNED})
    async with db.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()  # rolled back: other tests see the real function
        try:
            await conn.execute(
                "CREATE OR REPLACE FUNCTION segments_iso_epochs(attrs jsonb) RETURNS jsonb "
                "LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS $$ SELECT '{}'::jsonb $$"
            )
            await conn.execute(
                "UPDATE users SET attributes = $3 WHERE env_id = $1 AND id = $2",
                env.id,
                pk,
                {"a": SIGNED, "b": "2024-01-01"},
            )
            stale = "SELECT epochs FROM users WHERE env_id = $1 AND id = $2"
            assert await conn.fetchval(stale, env.id, pk) == {}
            assert await sync_generated(conn) == [ISO_EPOCHS_FUNCTION]
            assert await conn.fetchval(stale, env.id, pk) == {
                "a": SIGNED_US,
                "b": 1704067200000000,
            }
            assert await sync_generated(conn) == []
        finally:
            await transaction.rollback()
