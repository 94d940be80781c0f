"""Property: for random condition trees, random profiles and a random ``now``, the Python
engine and the SQL engine (on the real PostgreSQL) match exactly the same users; and the
Python engine gives the same answer on the attributes as read back from PostgreSQL.

Profiles carry tags, companies, segment memberships and event counts (real rows in user_tags,
companies / company_members, memberships and event_counts), and trees mix attribute (user and
company scope), tag, segment, event and bucket leaves.

The default run is 3,000 examples (and 1,000 of the relation-leaf test; about 75 seconds on
two cores, most of it hypothesis drawing the examples: ~200 choices each). For a long run:

    SEGMENTS_PROPERTY_EXAMPLES=100000 .venv/bin/pytest tests/conditions/test_property.py -q

(the variable sets ``max_examples`` of the hypothesis settings profile "conditions").
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from asyncpg.pool import PoolConnectionProxy
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from shared.conditions import ConditionError, Subject, compile_python, compile_sql, parse_condition
from shared.conditions.coerce import US_PER_DAY, datetime_us, to_text
from shared.conditions.operators import NEGATION
from shared.db import create_pool
from shared.environments import ensure_environment
from shared.settings import Settings
from tests.conditions.conftest import env_matches

settings.register_profile(
    "conditions",
    max_examples=int(os.environ.get("SEGMENTS_PROPERTY_EXAMPLES", "3000")),
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
TAG_KEYS = ["Dept", "dept", "x'y"]
TAG_VALUES = ["Sales", "sales", "", "%"]
SEGMENT_KEYS = ["s1", "s2", "s3"]
EVENT_NAMES = ["E1", "E2"]
# day offsets from now's UTC day, and windows, that meet at the windows' edges
EVENT_DAYS = [-31, -30, -29, -7, -6, -2, -1, 0, 1]
WITHIN_DAYS = [1, 2, 7, 30, 31]
TAG_PAIRS = [(k, v) for k in TAG_KEYS for v in TAG_VALUES]
attribute_maps = st.dictionaries(
    st.sampled_from([*NAMES, "first_seen_at"]), stored_values, min_size=1, max_size=4
)
# What the other leaves read: tags, companies' attributes, segment keys, and event counts as
# {event: {day offset from now's UTC day: count}} (turned into days once ``now`` is known).
company_maps = st.dictionaries(st.sampled_from(NAMES[:3]), scalars, min_size=1, max_size=2)


@st.composite
def extras(draw: st.DrawFn) -> tuple[Any, ...]:
    """(tags, companies' attributes, segment keys, {event: {day offset: count}}), drawn from
    plain integers (cheap to generate and to shrink)."""
    if draw(st.integers(0, 3)) == 0:
        return (frozenset(), (), frozenset(), {})
    tags = frozenset(TAG_PAIRS[i] for i in draw(st.lists(st.integers(0, 11), max_size=3)))
    companies = tuple(draw(company_maps) for _ in range(draw(st.integers(0, 2))))
    mask = draw(st.integers(0, 7))
    segment_keys = frozenset(k for i, k in enumerate(SEGMENT_KEYS) if mask >> i & 1)
    events: dict[str, dict[int, int]] = {}
    for _ in range(draw(st.integers(0, 4))):
        days = events.setdefault(EVENT_NAMES[draw(st.integers(0, 1))], {})
        days[draw(st.sampled_from(EVENT_DAYS))] = draw(st.integers(0, 3))
    return tags, companies, segment_keys, events


profiles = st.lists(
    st.tuples(
        attribute_maps,
        st.one_of(st.none(), st.text(ALPHABET, max_size=6)),
        moments,
        moments,
        extras(),
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
TYPED_NAMES = [*NAMES, *(f"company:{n}" for n in NAMES)]
type_maps = st.one_of(
    st.none(), st.dictionaries(st.sampled_from(TYPED_NAMES), st.sampled_from(TYPES), max_size=4)
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


EVENT_OPS = ["is", "not", "lt", "lte", "gt", "gte", "between"]


@st.composite
def other_leaves(draw: st.DrawFn, buckets: bool = True) -> dict[str, Any]:
    """A bucket (unless not ``buckets``), tag, segment or event leaf."""
    kinds = ["bucket", "tag", "segment", "event", "event", "event"]
    kind = draw(st.sampled_from(kinds if buckets else kinds[1:]))
    if kind == "bucket":
        lo = draw(st.integers(0, 100))
        seed = draw(st.sampled_from(["s", "new-onboarding", "ü'"]))
        return {"bucket": {"seed": seed, "from": lo, "to": draw(st.integers(lo, 100))}}
    if kind == "tag":
        tag = {"key": draw(st.sampled_from([*TAG_KEYS, "Other"]))}
        if draw(st.booleans()):
            tag["value"] = draw(st.sampled_from(TAG_VALUES))
        return {"tag": tag}
    if kind == "segment":
        return {"segment": draw(st.sampled_from([*SEGMENT_KEYS, "id:s1", "id:s2"]))}
    op = draw(st.sampled_from(EVENT_OPS))
    value: Any = draw(st.integers(0, 5))
    if op == "between":
        value = sorted([value, draw(st.integers(0, 5))])
    leaf = {"event": draw(st.sampled_from([*EVENT_NAMES, "E3"])), "op": op, "value": value}
    if draw(st.integers(0, 3)) > 0:
        leaf["withinDays"] = draw(st.one_of(st.sampled_from(WITHIN_DAYS), st.integers(1, 45)))
    return leaf


@st.composite
def leaves(
    draw: st.DrawFn,
    types: dict[str, str] | None,
    pools: dict[str, list[Any]],
    company_pools: dict[str, list[Any]],
    company_only: bool = False,
) -> dict[str, Any]:
    """A leaf of any kind; with ``company_only``, a company-scope attribute leaf (drawn
    directly: rejecting the others was most of the relation test's generation time)."""
    for _ in range(8):
        if not company_only and draw(st.integers(0, 3)) == 0:
            return draw(other_leaves())
        op = draw(st.sampled_from(sorted(OP_VALUES)))
        company = company_only or draw(st.integers(0, 3)) == 0
        known = company_pools if company else pools
        if known and draw(st.integers(0, 3)) > 0:  # mostly an attribute the profiles have
            name = draw(st.sampled_from(sorted(known)))
        else:
            name = draw(st.sampled_from([*NAMES, "first_seen_at", "last_seen_at"]))
        leaf: dict[str, Any] = {"attribute": name, "op": op}
        if company:
            leaf["scope"] = "company"
        pool = known.get(name)
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
    draw: st.DrawFn,
    types: dict[str, str] | None,
    pools: dict[str, list[Any]],
    company_pools: dict[str, list[Any]],
    depth: int = 0,
) -> Any:
    if depth >= 3 or draw(st.integers(0, 2)) == 0:
        return draw(leaves(types, pools, company_pools))
    key = draw(st.sampled_from(["all", "any", "none"]))
    size = draw(st.integers(0, 4))
    return {key: [draw(trees(types, pools, company_pools, depth + 1)) for _ in range(size)]}


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
    company_pools: dict[str, list[Any]] = {}
    for attributes, _, _, _, (_, companies, _, _) in rows:
        for found_in, maps in ((pools, [attributes]), (company_pools, companies)):
            for attrs in maps:
                for name, value in attrs.items():
                    if name in NAMES and (found := _scalars_in(value)):
                        found_in.setdefault(name, []).extend(found)
    return draw(trees(types, pools, company_pools)), types, rows


@st.composite
def relation_examples(draw: st.DrawFn) -> tuple[Any, dict[str, str] | None, list[Any]]:
    """Small trees of tag, segment, event and company-scope leaves only, so that every leaf
    weighs on the answer (edges of event windows, tag values, "any company")."""
    types = draw(st.one_of(st.none(), st.just({"company:a": "number"})))
    rows = draw(profiles)
    company_pools: dict[str, list[Any]] = {}
    for *_, (_, companies, _, _) in rows:
        for attrs in companies:
            for name, value in attrs.items():
                if found := _scalars_in(value):
                    company_pools.setdefault(name, []).extend(found)

    def leaf() -> Any:
        if company_pools and draw(st.integers(0, 3)) == 0:
            return draw(leaves(types, {}, company_pools, company_only=True))
        return draw(other_leaves(buckets=False))

    size = draw(st.integers(1, 3))
    if size == 1:
        return leaf(), types, rows
    return (
        {draw(st.sampled_from(["all", "any", "none"])): [leaf() for _ in range(size)]},
        types,
        rows,
    )


# ---- the database side -----------------------------------------------------------------------


Row = tuple[dict[str, Any], str | None, datetime, datetime, tuple[Any, ...]]


def _with_ids(obj: Any, ids: dict[str, int]) -> Any:
    """``{"segment": "id:s1"}`` leaves turned into references by id."""
    if isinstance(obj, dict):
        ref = obj.get("segment")
        if isinstance(ref, str) and ref.startswith("id:"):
            return {"segment": ids[ref[3:]]}
        return {k: _with_ids(v, ids) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_with_ids(v, ids) for v in obj]
    return obj


# Every row of an example in one statement (a round trip each was most of the database's
# share of the run): user ids are taken from the sequence first, so that the tags, companies,
# memberships and event counts can name their user by the row's position ($2's ordinality).
INSERT_EXAMPLE = """
WITH x AS (
    SELECT nextval(pg_get_serial_sequence('users', 'id')) AS id, x.*
    FROM unnest($2::text[], $3::jsonb[], $4::timestamptz[], $5::timestamptz[])
        WITH ORDINALITY AS x(uid, a, f, l, i)
), u AS (
    INSERT INTO users (env_id, id, user_id, attributes, first_seen_at, last_seen_at)
    OVERRIDING SYSTEM VALUE SELECT $1, id, uid, a, f, l FROM x
    RETURNING id, attributes
), ut AS (
    INSERT INTO user_tags (env_id, user_pk, tag_id)
    SELECT $1, x.id, y.t FROM unnest($6::int[], $7::bigint[]) AS y(i, t) JOIN x USING (i)
), c AS (
    INSERT INTO companies (env_id, company_id, attributes)
    SELECT $1, 'c' || n, a FROM unnest($9::jsonb[]) WITH ORDINALITY AS y(a, n)
    RETURNING id, company_id
), cm AS (
    INSERT INTO company_members (env_id, user_pk, company_pk)
    SELECT $1, x.id, c.id FROM unnest($8::int[]) WITH ORDINALITY AS y(i, n)
    JOIN x USING (i) JOIN c ON c.company_id = 'c' || y.n
), m AS (
    INSERT INTO memberships (env_id, user_pk, segment_id)
    SELECT $1, x.id, y.s FROM unnest($10::int[], $11::bigint[]) AS y(i, s) JOIN x USING (i)
), ec AS (
    INSERT INTO event_counts (env_id, user_pk, name, day, count)
    SELECT $1, x.id, y.n, y.d, y.c
    FROM unnest($12::int[], $13::text[], $14::date[], $15::int[]) AS y(i, n, d, c)
    JOIN x USING (i)
)
SELECT u.id, u.attributes FROM u JOIN x USING (id) ORDER BY x.i
"""


class Database:
    """A private event loop and one connection: hypothesis drives a synchronous test."""

    def __init__(self, dsn: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.pool: asyncpg.Pool = self.loop.run_until_complete(create_pool(dsn, size=1))
        # held for the module: a pool's acquire and release cost a round trip per example
        self.conn: PoolConnectionProxy[asyncpg.Record] = self.loop.run_until_complete(
            self.pool.acquire()
        )
        self.segments: dict[str, int] = {}
        self.tag_ids: dict[tuple[str, str], int] = {}
        self.env_id = self.loop.run_until_complete(self._setup())

    async def _setup(self) -> int:
        """The environment, its segments s1..s3 and every tag the examples use."""
        conn = self.conn
        env_id = (await ensure_environment(conn, "conditions-property")).id
        for key in SEGMENT_KEYS:
            seg_id = await conn.fetchval(
                """INSERT INTO segments (env_id, key, name, kind)
                   VALUES ($1, $2, $2, 'manual') RETURNING id""",
                env_id,
                key,
            )
            self.segments[key] = self.segments[str(seg_id)] = seg_id
        for key in TAG_KEYS:
            for value in TAG_VALUES:
                self.tag_ids[(key, value)] = await conn.fetchval(
                    "INSERT INTO tags (env_id, key, value) VALUES ($1, $2, $3) RETURNING id",
                    env_id,
                    key,
                    value,
                )
        return env_id

    def evaluate(
        self, condition: Any, rows: list[Row], now: datetime
    ) -> tuple[list[bool], list[dict[str, Any]]]:
        """(SQL match per row, attributes as read back); the rows are rolled back after."""
        return self.loop.run_until_complete(self._evaluate(condition, rows, now))

    async def _evaluate(
        self, condition: Any, rows: list[Row], now: datetime
    ) -> tuple[list[bool], list[dict[str, Any]]]:
        fragment, params = compile_sql(
            condition, first_param=3, now_param=2, segments=self.segments
        )
        # the form the admin's preview and users list use: relation leaves under OR / NOT as
        # uncorrelated sub-queries of the environment bound to $1
        uncorrelated, same_params = compile_sql(
            condition, first_param=3, now_param=2, segments=self.segments, env_param=1
        )
        assert same_params == params
        conn = self.conn
        transaction = conn.transaction()
        await transaction.start()  # rolled back: every example starts from no users
        try:
            inserted = await conn.fetch(INSERT_EXAMPLE, self.env_id, *self._columns(rows, now))
            found: list[set[int]] = []
            for where in (fragment, uncorrelated):
                rows_ = await conn.fetch(
                    f"""SELECT u.id FROM users u WHERE u.env_id = $1
                        AND $2::timestamptz IS NOT NULL AND {where}""",
                    self.env_id,
                    now,
                    *params,
                )
                found.append({r["id"] for r in rows_})
            matched, matched_uncorrelated = found
        finally:
            await transaction.rollback()
        assert matched_uncorrelated == matched, (fragment, uncorrelated)
        return [r["id"] in matched for r in inserted], [r["attributes"] for r in inserted]

    def _columns(self, rows: list[Row], now: datetime) -> list[list[Any]]:
        """INSERT_EXAMPLE's $2..$15: the users' columns, then the rows of user_tags,
        companies / company_members, memberships and event_counts by the user's position."""
        tags: list[tuple[int, int]] = []
        companies: list[tuple[int, dict[str, Any]]] = []
        members: list[tuple[int, int]] = []
        counts: list[tuple[int, str, date, int]] = []
        today = now.astimezone(UTC).date()
        for i, (*_, (tag_set, company_maps, segment_keys, events)) in enumerate(rows, 1):
            tags.extend((i, self.tag_ids[t]) for t in tag_set)
            companies.extend((i, c) for c in company_maps)
            members.extend((i, self.segments[k]) for k in segment_keys)
            for name, days in events.items():
                counts.extend((i, name, today + timedelta(days=d), n) for d, n in days.items())
        # rows are (attributes, user_id, first seen, last seen, extras)
        return [
            *([r[k] for r in rows] for k in (1, 0, 2, 3)),
            *([t[k] for t in tags] for k in range(2)),
            *([c[k] for c in companies] for k in range(2)),
            *([m[k] for m in members] for k in range(2)),
            *([c[k] for c in counts] for k in range(4)),
        ]

    def close(self) -> None:
        self.loop.run_until_complete(self.pool.release(self.conn))
        self.loop.run_until_complete(self.pool.close())
        self.loop.close()


@pytest.fixture(scope="module")
def database(settings: Settings) -> Iterator[Database]:
    assert settings.database_url is not None
    database = Database(settings.database_url)
    yield database
    database.close()


def subject(row: Row, attributes: dict[str, Any], db: Database, now: datetime) -> Subject:
    """The Python engine's view of a generated row (event day offsets resolved at ``now``)."""
    _, user_id, first, last, (tags, companies, segment_keys, events) = row
    today = datetime_us(now) // US_PER_DAY
    return Subject(
        0,
        user_id,
        attributes,
        first,
        last,
        tags=tags,
        companies=companies,
        segments=frozenset(db.segments[k] for k in segment_keys),
        events={name: {today + d: n for d, n in days.items()} for name, days in events.items()},
    )


@CONDITIONS
@given(example=examples(), now=moments)
def test_python_and_sql_engines_agree(
    database: Database, example: tuple[Any, dict[str, str] | None, list[Row]], now: datetime
) -> None:
    obj, types, rows = example
    try:
        condition = parse_condition(_with_ids(obj, database.segments), types)
    except ConditionError:
        assume(False)
        raise
    # user ids are unique per environment
    rows = [(r[0], None if r[1] is None else f"{r[1]}#{i}", *r[2:]) for i, r in enumerate(rows)]
    predicate = compile_python(condition, segments=database.segments)
    matched_sql, read_back = database.evaluate(condition, rows, now)
    subjects = {str(i): subject(row, row[0], database, now) for i, row in enumerate(rows)}
    in_env = env_matches(condition, subjects, now, database.segments)
    for i, (row, in_sql, stored) in enumerate(zip(rows, matched_sql, read_back, strict=True)):
        in_python = predicate(subject(row, row[0], database, now), now)
        assert in_python == in_sql, row
        assert (str(i) in in_env) == in_python, ("generated evaluator", row)
        again = predicate(subject(row, stored, database, now), now)
        assert again == in_python, ("read back", stored)
    event(
        f"rows matched: {'none' if not any(matched_sql) else 'all' if all(matched_sql) else 'some'}"
    )


NO_EXTRAS: tuple[Any, ...] = (frozenset(), (), frozenset(), {})


@settings(CONDITIONS, max_examples=max(1, CONDITIONS.max_examples // 3))
@given(example=relation_examples(), now=moments)
def test_engines_agree_on_tags_segments_events_and_companies(
    database: Database, example: tuple[Any, dict[str, str] | None, list[Row]], now: datetime
) -> None:
    test_python_and_sql_engines_agree.hypothesis.inner_test(database, example, now)  # type: ignore[attr-defined]


def test_now_is_honoured_not_the_clock(database: Database) -> None:
    """Time-relative leaves use the ``now`` passed in, in both engines."""
    condition = parse_condition({"attribute": "a", "op": "within_last_days", "value": 1})
    seen = datetime(2020, 1, 1, tzinfo=UTC)
    rows: list[Row] = [({"a": "2020-01-01T00:00:00Z"}, "u", seen, seen, NO_EXTRAS)]
    for now, expected in [(seen + timedelta(hours=1), True), (seen + timedelta(days=2), False)]:
        matched, _ = database.evaluate(condition, rows, now)
        assert matched == [expected]
        assert compile_python(condition)(Subject(0, "u", rows[0][0], seen, seen), now) is expected
