"""Attribute types: inference rules, fitting values, and the registry in PostgreSQL."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from shared.attribute_types import fits, infer_type, load_types, record_inferred
from shared.environments import EnvironmentKeys

INFERRED: list[tuple[Any, str | None]] = [
    (True, "boolean"),
    (False, "boolean"),
    (0, "number"),
    (5.5, "number"),
    ([], "list"),
    (["a", 1], "list"),
    ("2024-03-01", "datetime"),
    ("2024-03-01T10:00:00+02:00", "datetime"),
    ("2024-02-30", "string"),  # not a date
    ("2024-3-1", "string"),  # under 10 characters
    ("hello", "string"),
    ("", "string"),
    ("42", "string"),
    (None, None),
    ({"a": 1}, None),
]


@pytest.mark.parametrize(("value", "expected"), INFERRED)
def test_infer_type(value: Any, expected: str | None) -> None:
    assert infer_type(value) == expected


FITS: list[tuple[Any, str, bool]] = [
    ("42", "number", True),
    ("4 2", "number", False),
    (True, "number", False),
    (5, "string", True),
    ([1], "string", False),
    ("TRUE", "boolean", True),
    ("yes", "boolean", False),
    (1709251200, "datetime", True),
    ("2024-03-01", "datetime", True),
    ("March", "datetime", False),
    ("a", "list", False),
    ([], "list", True),
    (None, "number", True),  # null is absence, not a bad value
    ({"a": 1}, "string", False),
]


@pytest.mark.parametrize(("value", "type_", "expected"), FITS)
def test_fits(value: Any, type_: str, expected: bool) -> None:
    assert fits(value, type_) is expected


async def test_record_inferred_keeps_the_first_type(db: asyncpg.Pool, env: EnvironmentKeys) -> None:
    async with db.acquire() as conn:
        await record_inferred(
            conn, env.id, "user", {"plan": "pro", "seats": 3, "x": None, "o": {"a": 1}}
        )
        await record_inferred(conn, env.id, "user", {"plan": 5, "since": "2024-01-01"})
        await record_inferred(conn, env.id, "company", {"plan": True})
        await record_inferred(conn, env.id, "membership", {"role": "admin"})
        await record_inferred(conn, env.id, "user", {})
        assert await load_types(conn, env.id) == {
            "plan": "string",
            "seats": "number",
            "since": "datetime",
            "company:plan": "boolean",
        }
        declared = await conn.fetchval(
            "SELECT bool_or(declared) FROM attribute_types WHERE env_id = $1", env.id
        )
        assert declared is False
