"""Hostile attribute names and values: bound as parameters, matched literally, never SQL."""

from __future__ import annotations

import pytest

from shared.conditions import compile_sql, parse_condition
from tests.conditions.conftest import Profiles

HOSTILE = [
    "x' OR '1'='1",
    "'); DROP TABLE users; --",
    '" OR true --',
    "$1 OR $2",
    "a\\b",
    "100%",
    "a_b",
    "}'{",
    "ü' || pg_sleep(5) || '",
]


@pytest.mark.parametrize("text", HOSTILE)
async def test_hostile_names_and_values_match_literally(profiles: Profiles, text: str) -> None:
    await profiles.add("exact", {text: text})
    await profiles.add("other", {"x": "y", text + "!": text + "!"})
    for op in ("is", "contains", "starts_with", "ends_with"):
        condition = {"attribute": text, "op": op, "value": text}
        sql, params = compile_sql(parse_condition(condition))
        assert text not in sql
        assert text in params
        assert await profiles.matches(condition) == {"exact"}
    assert await profiles.matches({"attribute": text, "op": "in", "value": [text, "zz"]}) == {
        "exact"
    }
    assert await profiles.matches({"attribute": text, "op": "is_set"}) == {"exact"}
    count = await profiles.db.fetchval(
        "SELECT count(*) FROM users WHERE env_id = $1", profiles.env_id
    )
    assert count == 2


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("contains", "%", {"percent"}),
        ("contains", "_", {"underscore"}),
        ("contains", "\\", {"backslash"}),
        ("contains", "\\%", set()),
        ("starts_with", "%", set()),
        ("starts_with", "a%", {"percent"}),
        ("ends_with", "_c", {"underscore"}),
        ("ends_with", "\\", {"backslash"}),
        ("contains", "a_c", {"underscore"}),
        ("contains", "a%c", {"percent"}),
    ],
)
async def test_like_wildcards_are_literal(
    profiles: Profiles, op: str, value: str, expected: set[str]
) -> None:
    await profiles.add_all(
        {
            "percent": {"s": "a%c"},
            "underscore": {"s": "a_c"},
            "backslash": {"s": "a\\"},
            "plain": {"s": "abc"},
        }
    )
    assert await profiles.matches({"attribute": "s", "op": op, "value": value}) == expected


async def test_regex_is_bound_not_formatted(profiles: Profiles) -> None:
    await profiles.add_all({"quote": {"s": "it's"}, "plain": {"s": "its"}})
    condition = {"attribute": "s", "op": "regex", "value": "t'"}
    sql, params = compile_sql(parse_condition(condition))
    assert "t'" not in sql and "t'" in params
    assert await profiles.matches(condition) == {"quote"}
