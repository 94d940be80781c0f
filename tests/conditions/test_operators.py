"""Every attribute operator against every kind of stored value, in both engines.

One environment holds a profile per stored-value kind for attribute ``x``; each case lists the
profiles it must match. ``Profiles.matches`` first asserts that Python and SQL agree."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conditions.conftest import Profiles

STORED: dict[str, dict[str, Any]] = {
    "missing": {},
    "null": {"x": None},
    "str_pro": {"x": "pro"},
    "str_Pro": {"x": "Pro"},
    "str_empty": {"x": ""},
    "int_5": {"x": 5},
    "float_5_5": {"x": 5.5},
    "float_1e20": {"x": 1e20},
    "numstr_5": {"x": "5"},
    "numstr_5_0": {"x": "5.0"},
    "numstr_bad": {"x": "5 apples"},
    "true": {"x": True},
    "str_TRUE": {"x": "TRUE"},
    "list": {"x": ["pro", "Beta", 5, True, None]},
    "empty_list": {"x": []},
    "obj": {"x": {"a": 1}},
    "unicode": {"x": "Ünïcödé ΣΑΣ"},
    "date": {"x": "2024-03-01"},
    "datetime_tz": {"x": "2024-03-01T23:30:00-02:00"},  # 2024-03-02T01:30Z
    "epoch_s": {"x": 1709251200},  # 2024-03-01T00:00Z
    "epoch_ms": {"x": 1709251200000},
    "bad_date": {"x": "2024-02-30"},
}
ALL = frozenset(STORED)
NUMBER_FIVE = {"int_5", "numstr_5", "numstr_5_0"}
ON_MARCH_1 = {"date", "epoch_s", "epoch_ms"}
EARLY = ON_MARCH_1 | {"int_5", "float_5_5"}  # before 2024-03-01T00:00:01Z

# (condition without "attribute", declared types or None, expected matches)
CASES: list[tuple[dict[str, Any], dict[str, str] | None, set[str]]] = [
    ({"op": "is", "value": "pro"}, None, {"str_pro"}),
    ({"op": "is", "value": "pro", "ci": True}, None, {"str_pro", "str_Pro"}),
    ({"op": "not", "value": "pro"}, None, set(ALL - {"str_pro"})),
    ({"op": "not", "value": "PRO", "ci": True}, None, set(ALL - {"str_pro", "str_Pro"})),
    ({"op": "is", "value": 5}, None, NUMBER_FIVE),
    ({"op": "not", "value": 5}, None, set(ALL - NUMBER_FIVE)),
    ({"op": "is", "value": "5"}, None, {"numstr_5", "int_5"}),
    ({"op": "is", "value": "100000000000000000000"}, None, {"float_1e20"}),
    ({"op": "is", "value": True}, None, {"true", "str_TRUE"}),
    ({"op": "not", "value": True}, None, set(ALL - {"true", "str_TRUE"})),
    ({"op": "is", "value": "true"}, {"x": "boolean"}, {"true", "str_TRUE"}),
    ({"op": "is_set"}, None, set(ALL - {"missing", "null", "empty_list"})),
    ({"op": "is_not_set"}, None, {"missing", "null", "empty_list"}),
    ({"op": "in", "value": ["pro", "5"]}, None, {"str_pro", "int_5", "numstr_5"}),
    ({"op": "in", "value": [5, 5.5]}, None, NUMBER_FIVE | {"float_5_5"}),
    ({"op": "in", "value": []}, None, set()),
    ({"op": "not_in", "value": ["pro"]}, None, set(ALL - {"str_pro"})),
    ({"op": "not_in", "value": ["PRO", "X"], "ci": True}, None, set(ALL - {"str_pro", "str_Pro"})),
    ({"op": "gt", "value": 5}, None, {"float_5_5", "float_1e20", "epoch_s", "epoch_ms"}),
    (
        {"op": "gte", "value": 5},
        None,
        NUMBER_FIVE | {"float_5_5", "float_1e20", "epoch_s", "epoch_ms"},
    ),
    ({"op": "lt", "value": 5.5}, None, NUMBER_FIVE),
    ({"op": "lte", "value": "5.5"}, None, NUMBER_FIVE | {"float_5_5"}),
    ({"op": "between", "value": [5, 6]}, None, NUMBER_FIVE | {"float_5_5"}),
    ({"op": "between", "value": [6, 5]}, None, set()),
    ({"op": "gt", "value": "2024-03-01"}, None, {"datetime_tz", "float_1e20"}),
    (
        {"op": "gte", "value": "2024-03-01T00:00:00Z"},
        None,
        ON_MARCH_1 | {"datetime_tz", "float_1e20"},
    ),
    ({"op": "lt", "value": "2024-03-01T00:00:01+00:00"}, None, EARLY),
    ({"op": "on", "value": "2024-03-01"}, None, ON_MARCH_1),
    ({"op": "on", "value": "2024-03-02T23:59:59Z"}, None, {"datetime_tz"}),
    ({"op": "before", "value": "2024-03-01T00:00:01Z"}, None, EARLY),
    ({"op": "after", "value": "2024-03-01"}, None, {"datetime_tz", "float_1e20"}),
    ({"op": "between", "value": ["2024-03-01", "2024-03-02"]}, None, ON_MARCH_1),
    ({"op": "within_last_days", "value": 1}, None, {"datetime_tz"}),
    ({"op": "within_last_days", "value": 0}, None, set()),
    ({"op": "more_than_days_ago", "value": 1}, None, EARLY),
    ({"op": "is", "value": 1709251200}, {"x": "datetime"}, ON_MARCH_1),
    ({"op": "contains", "value": "ro"}, None, {"str_pro", "str_Pro"}),
    ({"op": "contains", "value": "RO", "ci": True}, None, {"str_pro", "str_Pro"}),
    ({"op": "not_contains", "value": "ro"}, None, set(ALL - {"str_pro", "str_Pro"})),
    (
        {"op": "contains", "value": "5"},
        None,
        NUMBER_FIVE | {"float_5_5", "numstr_bad", "epoch_s", "epoch_ms"},
    ),
    (
        {"op": "contains", "value": ""},
        None,
        set(ALL - {"missing", "null", "list", "empty_list", "obj"}),
    ),
    ({"op": "contains", "value": "%"}, None, set()),
    ({"op": "contains", "value": "_"}, None, set()),
    ({"op": "starts_with", "value": "P"}, None, {"str_Pro"}),
    ({"op": "starts_with", "value": "p", "ci": True}, None, {"str_pro", "str_Pro"}),
    ({"op": "ends_with", "value": "ΣΑΣ"}, None, {"unicode"}),
    ({"op": "ends_with", "value": "σας", "ci": True}, None, {"unicode"}),
    ({"op": "contains", "value": "ÜNÏ", "ci": True}, None, {"unicode"}),
    ({"op": "regex", "value": "^[A-Z]"}, None, {"str_Pro", "str_TRUE"}),
    (
        {"op": "regex", "value": r"^\d+$"},
        None,
        {"int_5", "numstr_5", "epoch_s", "epoch_ms", "float_1e20"},
    ),
    ({"op": "regex", "value": "ΣΑ."}, None, {"unicode"}),
    ({"op": "includes_any", "value": ["pro", "5"]}, None, {"list"}),
    ({"op": "includes_any", "value": ["true"]}, None, {"list"}),
    ({"op": "includes_all", "value": ["beta", "PRO"], "ci": True}, None, {"list"}),
    ({"op": "includes_all", "value": ["pro", "nope"]}, None, set()),
    ({"op": "includes_all", "value": []}, None, {"list", "empty_list"}),
    ({"op": "not_includes_any", "value": ["pro"]}, None, set(ALL - {"list"})),
    ({"op": "not_includes_all", "value": ["pro", "Beta"]}, None, set(ALL - {"list"})),
    (
        {"op": "is_set"},
        {"x": "number"},
        NUMBER_FIVE | {"float_5_5", "float_1e20", "epoch_s", "epoch_ms"},
    ),
    ({"op": "is_set"}, {"x": "list"}, {"list"}),
    ({"op": "is_set"}, {"x": "boolean"}, {"true", "str_TRUE"}),
    (
        {"op": "is_set"},
        {"x": "datetime"},
        {"date", "datetime_tz", "epoch_s", "epoch_ms", "int_5", "float_5_5", "float_1e20"},
    ),
    ({"op": "is_not_set"}, {"x": "string"}, {"missing", "null", "list", "empty_list", "obj"}),
]


@pytest.mark.parametrize(
    ("leaf", "types", "expected"),
    CASES,
    ids=[f"{c[0]['op']}-{c[0].get('value', '')}-{c[1] or ''}-{i}" for i, c in enumerate(CASES)],
)
async def test_operator_on_every_stored_kind(
    profiles: Profiles, leaf: dict[str, Any], types: dict[str, str] | None, expected: set[str]
) -> None:
    await profiles.add_all(STORED)
    assert await profiles.matches({"attribute": "x", **leaf}, types=types) == expected


async def test_negative_ops_are_exact_negations(profiles: Profiles) -> None:
    await profiles.add_all(STORED)
    pairs: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({"op": "is", "value": "pro"}, {"op": "not", "value": "pro"}),
        ({"op": "in", "value": [5]}, {"op": "not_in", "value": [5]}),
        ({"op": "contains", "value": "r"}, {"op": "not_contains", "value": "r"}),
        ({"op": "includes_any", "value": ["x"]}, {"op": "not_includes_any", "value": ["x"]}),
        ({"op": "includes_all", "value": ["5"]}, {"op": "not_includes_all", "value": ["5"]}),
        ({"op": "is_set"}, {"op": "is_not_set"}),
    ]
    for positive, negative in pairs:
        yes = await profiles.matches({"attribute": "x", **positive})
        no = await profiles.matches({"attribute": "x", **negative})
        assert yes | no == ALL and not yes & no, positive


async def test_groups_and_empty_groups(profiles: Profiles) -> None:
    await profiles.add_all({"a": {"p": 1, "q": 1}, "b": {"p": 1}, "c": {}})
    p = {"attribute": "p", "op": "is", "value": 1}
    q = {"attribute": "q", "op": "is", "value": 1}
    assert await profiles.matches({"all": []}) == {"a", "b", "c"}
    assert await profiles.matches({"any": []}) == set()
    assert await profiles.matches({"none": []}) == {"a", "b", "c"}
    assert await profiles.matches({"all": [p, q]}) == {"a"}
    assert await profiles.matches({"any": [p, q]}) == {"a", "b"}
    assert await profiles.matches({"none": [p, q]}) == {"c"}
    assert await profiles.matches({"none": [{"any": []}]}) == {"a", "b", "c"}
    assert await profiles.matches({"all": [p, {"none": [q]}]}) == {"b"}


async def test_seen_columns_are_datetime_attributes(profiles: Profiles) -> None:
    await profiles.add("old", {"last_seen_at": "2099-01-01"})  # the column wins, not attributes
    old_first = profiles.subjects["old"].first_seen_at
    await profiles.add("new", {}, first_seen_at=old_first.replace(month=2, day=28))
    assert await profiles.matches(
        {"attribute": "last_seen_at", "op": "more_than_days_ago", "value": 0}
    ) == {"old", "new"}
    assert await profiles.matches(
        {"attribute": "first_seen_at", "op": "within_last_days", "value": 7}
    ) == {"new"}
    assert await profiles.matches(
        {"attribute": "first_seen_at", "op": "on", "value": "2024-01-15"}
    ) == {"old"}
    assert await profiles.matches({"attribute": "last_seen_at", "op": "is_set"}) == {"old", "new"}


async def test_bucket_matches_an_independent_md5(profiles: Profiles) -> None:
    import hashlib

    for i in range(60):
        await profiles.add(f"user-{i}", {})
    await profiles.add("anonymous", {}, user_id=None)
    expected = {
        name
        for name in profiles.subjects
        if name != "anonymous"
        and int(hashlib.md5(f"rollout:{name}".encode(), usedforsecurity=False).hexdigest()[:8], 16)
        % 100
        < 30
    }
    got = await profiles.matches({"bucket": {"seed": "rollout", "from": 0, "to": 30}})
    assert got == expected and 5 < len(got) < 40
    assert await profiles.matches({"bucket": {"seed": "rollout", "from": 0, "to": 100}}) == set(
        profiles.subjects
    ) - {"anonymous"}
    assert await profiles.matches({"bucket": {"seed": "rollout", "from": 7, "to": 7}}) == set()


async def test_huge_numbers_read_the_same(profiles: Profiles) -> None:
    huge = 10**100 + 7  # beyond int64 (the encoders refuse ints past 4300 digits anyway)
    await profiles.add_all({"huge": {"x": huge}, "small": {"x": 7}})
    assert await profiles.matches({"attribute": "x", "op": "ends_with", "value": "0007"}) == {
        "huge"
    }
    assert await profiles.matches({"attribute": "x", "op": "gt", "value": 1e99}) == {"huge"}
    assert await profiles.matches({"attribute": "x", "op": "after", "value": "9999-12-31"}) == {
        "huge"
    }
