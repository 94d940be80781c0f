"""Property: for random condition trees, random profiles and a random ``now``, the Python
engine and the SQL engine (on the real PostgreSQL) match exactly the same users; and the
Python engine gives the same answer on the attributes as read back from PostgreSQL.

The default run is 1,500 examples (about half a minute). For a long run:

    SEGMENTS_PROPERTY_EXAMPLES=100000 .venv/bin/pytest tests/conditions/test_property.py -q

(the variable sets ``max_examples`` of the hypothesis settings profile "conditions").
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from shared.conditions import ConditionError, Subject, compile_python, compile_sql, parse_condition
from shared.conditions.coerce import to_text
from shared.conditions.operators import NEGATION
from shared.db import create_pool
from shared.environments import ensure_environment
from shared.settings import Settings

settings.register_profile(
    "conditions",
    max_examples=int(os.environ.get("SEGMENTS_PROPERTY_EXAMPLES", "1500")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
CONDITIONS = settings.get_profile("conditions")

# ---- stored values ---------------------------------------------------------------------------

ALPHABET = "aAbBzZ0157e+.-_%\\ :TtΣσςİißẞéÉ\n\v\r'"  # noqa: RUF001
NAMES = ["a", "b", "c", 'we\'ird "name"', "ü"]
SPECIAL_STRINGS = [
    "42", "-3.5", "1e5", "007", "5.0", " 5", "5 ", "1e9999", "1E-3", "+1", "-", "",
    "true", "TRUE", "False", "fAlSe", "true ", "yes",
    "2024-03-01", "2024-02-29", "2023-02-29", "2024-03-01T12:00:00Z", "2024-03-01 12:00",
    "2024-03-01T23:30:00-02:00", "2024-03-01T10:00:00.123456789+0530", "2024-03-01T10:00+05",
    "2024-13-01", "2024-03-01T24:00:00", "2024-03-01T10:60", "0000-01-01", "0001-01-01",
    "9999-12-31T23:59:59.999999Z", "2024-03-01t10:00:00z", "2024-03-01T10:00:00,5Z",
    "2024-3-1", "20240301", "2024-03-01T10:00:00+24:00",
]  # fmt: skip
NUMBERS = [0, 5, 5.5, -0.0, 1e20, 1e-7, 1709251200, 1709251200000, 99999999999, 100000000000]


@st.composite
def iso_strings(draw: st.DrawFn) -> str:
    """Date-like strings around the interesting edges (some invalid)."""
    year = draw(st.sampled_from([1, 1969, 1970, 2000, 2023, 2024, 2025, 9999]))
    text = f"{year:04d}-{draw(st.integers(0, 13)):02d}-{draw(st.integers(0, 32)):02d}"
    if draw(st.booleans()):
        text += f"T{draw(st.integers(0, 24)):02d}:{draw(st.integers(0, 60)):02d}"
        if draw(st.booleans()):
            text += f":{draw(st.integers(0, 59)):02d}"
            if draw(st.booleans()):
                text += "." + draw(st.text("0123456789", min_size=1, max_size=9))
        text += draw(st.sampled_from(["", "Z", "+01:00", "-0230", "+14", "-23:59"]))
    return text


strings = st.one_of(st.text(ALPHABET, max_size=8), st.sampled_from(SPECIAL_STRINGS), iso_strings())
numbers = st.one_of(
    st.sampled_from(NUMBERS),
    st.integers(-(10**25), 10**25),
    st.integers(1_700_000_000, 1_720_000_000),
    st.integers(1_700_000_000_000, 1_720_000_000_000),
    st.floats(allow_nan=False, allow_infinity=False),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, strings)
stored_values = st.one_of(
    scalars,
    st.lists(scalars, max_size=4),
    st.dictionaries(st.sampled_from("xy"), scalars, max_size=2),
)
moments = st.datetimes(
    min_value=datetime(2023, 6, 1), max_value=datetime(2025, 1, 1), timezones=st.just(UTC)
)
profiles = st.lists(
    st.tuples(
        st.dictionaries(
            st.sampled_from([*NAMES, "first_seen_at"]), stored_values, min_size=1, max_size=4
        ),
        st.one_of(st.none(), st.text(ALPHABET, max_size=6)),
        moments,
        moments,
    ),
    min_size=2,
    max_size=6,
)

# ---- conditions ------------------------------------------------------------------------------

REGEX_ATOMS = ["a", "A", "b", "Σ", "5", ".", "\\d", "\\w", "\\s", "\\S", "\\.", "\\%", "[a-c]"]
REGEX_ATOMS += ["[^a]", "[\\d_]", "[Σσ-ς]", "\\n", "(?:a|b)", "(a|)", "é"]


@st.composite
def regexes(draw: st.DrawFn) -> str:
    parts = [draw(st.sampled_from(["", "^"]))]
    for _ in range(draw(st.integers(0, 4))):
        atom = draw(st.sampled_from(REGEX_ATOMS))
        parts.append(atom + draw(st.sampled_from(["", "", "*", "+", "?", "{2}", "{0,2}", "{1,}"])))
    if draw(st.booleans()) and len(parts) > 2:
        parts.insert(draw(st.integers(1, len(parts) - 1)), "|")
    return "".join(parts) + draw(st.sampled_from(["", "$"]))


short_text = st.text(ALPHABET, max_size=3)
dates = st.one_of(iso_strings(), st.sampled_from(SPECIAL_STRINGS[18:]), st.sampled_from(NUMBERS))
ordered = st.one_of(numbers, dates, st.sampled_from(SPECIAL_STRINGS[:6]))
OP_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "is_set": st.none(),
    "is_not_set": st.none(),
    "is": scalars,
    "not": scalars,
    "in": st.one_of(st.lists(strings, max_size=4), st.lists(numbers, max_size=4)),
    "not_in": st.one_of(st.lists(strings, max_size=4), st.lists(numbers, max_size=4)),
    "contains": short_text,
    "not_contains": short_text,
    "starts_with": short_text,
    "ends_with": short_text,
    "regex": regexes(),
    "lt": ordered,
    "lte": ordered,
    "gt": ordered,
    "gte": ordered,
    "between": st.lists(ordered, min_size=2, max_size=2),
    "before": dates,
    "after": dates,
    "on": dates,
    "within_last_days": st.integers(0, 400),
    "more_than_days_ago": st.integers(0, 400),
    "includes_any": st.lists(strings, max_size=3),
    "includes_all": st.lists(strings, max_size=3),
    "not_includes_any": st.lists(strings, max_size=3),
    "not_includes_all": st.lists(strings, max_size=3),
}
TYPES = ["string", "number", "boolean", "datetime", "list"]
type_maps = st.one_of(
    st.none(), st.dictionaries(st.sampled_from(NAMES), st.sampled_from(TYPES), max_size=3)
)


_TEXT_OPS = {"contains", "not_contains", "starts_with", "ends_with"}
_SCALAR_OPS = {"is", "not", "lt", "lte", "gt", "gte", "before", "after", "on"}


def _pool_value(draw: st.DrawFn, op: str, pool: list[Any]) -> Any:
    """A condition value taken from the stored values, so that leaves often match."""
    x = draw(st.sampled_from(pool))
    text = to_text(x) or ""
    if op in _TEXT_OPS or op in ("includes_any", "includes_all", *NEGATION):
        i = draw(st.integers(0, len(text)))
        part = text[i : draw(st.integers(i, len(text)))] if op in _TEXT_OPS else text
        part = part.swapcase() if draw(st.booleans()) else part
        return [part] if "includes" in op else part
    if op in _SCALAR_OPS:
        return x
    if op == "regex":  # a stored substring with some characters generalised
        i = draw(st.integers(0, len(text)))
        pattern = draw(st.sampled_from(["", "^"]))
        for ch in text[i : i + 6]:
            choices = ["\\" + ch if ch in "\\.+*?()|[]{}^$-" else ch, ".", "[^a]", "\\S"]
            choices += ["\\s" if ch in " \t\n\r\f" else "\\d" if ch.isdigit() else "\\w"]
            pattern += draw(st.sampled_from(choices))
        return pattern
    if op in ("in", "not_in"):
        return [x, draw(st.sampled_from(pool))]
    if op == "between":
        return sorted([x, draw(st.sampled_from(pool))], key=repr)
    return draw(OP_VALUES[op])


@st.composite
def leaves(
    draw: st.DrawFn, types: dict[str, str] | None, pools: dict[str, list[Any]]
) -> dict[str, Any]:
    for _ in range(8):
        if draw(st.integers(0, 15)) == 0:
            lo = draw(st.integers(0, 100))
            seed = draw(st.sampled_from(["s", "new-onboarding", "ü'"]))
            return {"bucket": {"seed": seed, "from": lo, "to": draw(st.integers(lo, 100))}}
        op = draw(st.sampled_from(sorted(OP_VALUES)))
        if pools and draw(st.integers(0, 3)) > 0:  # mostly an attribute the profiles have
            name = draw(st.sampled_from(sorted(pools)))
        else:
            name = draw(st.sampled_from([*NAMES, "first_seen_at", "last_seen_at"]))
        leaf: dict[str, Any] = {"attribute": name, "op": op}
        pool = pools.get(name)
        if pool and op not in ("is_set", "is_not_set") and draw(st.booleans()):
            value = _pool_value(draw, op, pool)
        else:
            value = draw(OP_VALUES[op])
        if value is not None:
            leaf["value"] = value
        if draw(st.booleans()):
            leaf["ci"] = True
        try:
            parse_condition(leaf, types)
        except ConditionError:
            continue
        return leaf
    return {"attribute": "a", "op": "is_set"}


@st.composite
def trees(
    draw: st.DrawFn, types: dict[str, str] | None, pools: dict[str, list[Any]], depth: int = 0
) -> Any:
    if depth >= 3 or draw(st.integers(0, 2)) == 0:
        return draw(leaves(types, pools))
    key = draw(st.sampled_from(["all", "any", "none"]))
    size = draw(st.integers(0, 4))
    return {key: [draw(trees(types, pools, depth + 1)) for _ in range(size)]}


def _scalars_in(value: Any) -> list[Any]:
    if isinstance(value, list):
        return [x for v in value for x in _scalars_in(v)]
    if isinstance(value, dict):
        return _scalars_in(list(value.values()))
    return [] if value is None else [value]


@st.composite
def examples(draw: st.DrawFn) -> tuple[Any, dict[str, str] | None, list[Any]]:
    """(condition JSON, declared types, profile rows); condition values often come from the
    stored ones, so that leaves are neither always true nor always false."""
    types = draw(type_maps)
    rows = draw(profiles)
    pools: dict[str, list[Any]] = {}
    for attributes, *_ in rows:
        for name, value in attributes.items():
            if name in NAMES and (found := _scalars_in(value)):
                pools.setdefault(name, []).extend(found)
    return draw(trees(types, pools)), types, rows


# ---- the database side -----------------------------------------------------------------------


class Database:
    """A private event loop and connection pool: hypothesis drives a synchronous test."""

    def __init__(self, dsn: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.pool: asyncpg.Pool = self.loop.run_until_complete(create_pool(dsn, size=1))

        async def new_env() -> int:
            async with self.pool.acquire() as conn:
                return (await ensure_environment(conn, "conditions-property")).id

        self.env_id = self.loop.run_until_complete(new_env())

    def evaluate(
        self, condition: Any, rows: list[tuple[Any, ...]], now: datetime
    ) -> tuple[list[bool], list[dict[str, Any]]]:
        """(SQL match per row, attributes as read back); the rows are rolled back after."""
        return self.loop.run_until_complete(self._evaluate(condition, rows, now))

    async def _evaluate(
        self, condition: Any, rows: list[tuple[Any, ...]], now: datetime
    ) -> tuple[list[bool], list[dict[str, Any]]]:
        fragment, params = compile_sql(condition, first_param=3, now_param=2)
        async with self.pool.acquire() as conn:
            transaction = conn.transaction()
            await transaction.start()  # rolled back: every example starts from no users
            try:
                inserted = await conn.fetch(
                    """INSERT INTO users (env_id, user_id, attributes, first_seen_at, last_seen_at)
                       SELECT $1, * FROM unnest($2::text[], $3::jsonb[], $4::timestamptz[],
                                                $5::timestamptz[])
                       RETURNING id, attributes""",
                    self.env_id,
                    [r[1] for r in rows],  # rows are (attributes, user_id, first, last)
                    [r[0] for r in rows],
                    [r[2] for r in rows],
                    [r[3] for r in rows],
                )
                matched = {
                    r["id"]
                    for r in await conn.fetch(
                        f"""SELECT u.id FROM users u WHERE u.env_id = $1
                            AND $2::timestamptz IS NOT NULL AND {fragment}""",
                        self.env_id,
                        now,
                        *params,
                    )
                }
            finally:
                await transaction.rollback()
        return [r["id"] in matched for r in inserted], [r["attributes"] for r in inserted]

    def close(self) -> None:
        self.loop.run_until_complete(self.pool.close())
        self.loop.close()


@pytest.fixture(scope="module")
def database(settings: Settings) -> Iterator[Database]:
    assert settings.database_url is not None
    database = Database(settings.database_url)
    yield database
    database.close()


@CONDITIONS
@given(example=examples(), now=moments)
def test_python_and_sql_engines_agree(
    database: Database, example: tuple[Any, dict[str, str] | None, list[Any]], now: datetime
) -> None:
    obj, types, rows = example
    try:
        condition = parse_condition(obj, types)
    except ConditionError:
        assume(False)
        raise
    # user ids are unique per environment
    rows = [(a, None if u is None else f"{u}#{i}", f, s) for i, (a, u, f, s) in enumerate(rows)]
    predicate = compile_python(condition)
    matched_sql, read_back = database.evaluate(condition, rows, now)
    for (attributes, user_id, first, last), in_sql, stored in zip(
        rows, matched_sql, read_back, strict=True
    ):
        in_python = predicate(Subject(0, user_id, attributes, first, last), now)
        assert in_python == in_sql, (attributes, user_id, first, last)
        again = predicate(Subject(0, user_id, stored, first, last), now)
        assert again == in_python, ("read back", stored)
    event(
        f"rows matched: {'none' if not any(matched_sql) else 'all' if all(matched_sql) else 'some'}"
    )


def test_now_is_honoured_not_the_clock(database: Database) -> None:
    """Time-relative leaves use the ``now`` passed in, in both engines."""
    condition = parse_condition({"attribute": "a", "op": "within_last_days", "value": 1})
    seen = datetime(2020, 1, 1, tzinfo=UTC)
    rows = [({"a": "2020-01-01T00:00:00Z"}, "u", seen, seen)]
    for now, expected in [(seen + timedelta(hours=1), True), (seen + timedelta(days=2), False)]:
        matched, _ = database.evaluate(condition, rows, now)
        assert matched == [expected]
        assert compile_python(condition)(Subject(0, "u", rows[0][0], seen, seen), now) is expected
