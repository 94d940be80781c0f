"""Helpers for evaluating conditions with both engines: profiles are inserted as real rows of
``users`` for the test's environment, the SQL engine runs on PostgreSQL, the Python engine on
the same profiles, and every check asserts that the two agree before looking at the result."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
import pytest

from shared.conditions import Condition, Subject, compile_python, compile_sql, parse_condition
from shared.conditions.env_engine import compile_segments
from shared.db import Conn
from shared.environments import EnvironmentKeys

NOW = datetime(2024, 3, 2, 12, 0, tzinfo=UTC)
FIRST_SEEN = datetime(2024, 1, 15, 8, 30, tzinfo=UTC)
LAST_SEEN = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)


EPOCH_DAY = date(1970, 1, 1)


async def write_related(
    conn: Conn,
    env_id: int,
    user_pk: int,
    tags: frozenset[tuple[str, str]],
    companies: list[tuple[str, dict[str, Any]]],
    segment_ids: list[int],
    events: Mapping[str, Mapping[date, int]],
) -> None:
    """The rows a user's tag, company, segment and event leaves read."""
    for key, value in tags:
        tag_id = await conn.fetchval(
            """INSERT INTO tags (env_id, key, value) VALUES ($1, $2, $3)
               ON CONFLICT (env_id, key, value) DO UPDATE SET key = EXCLUDED.key RETURNING id""",
            env_id,
            key,
            value,
        )
        await conn.execute(
            "INSERT INTO user_tags (env_id, user_pk, tag_id) VALUES ($1, $2, $3)",
            env_id,
            user_pk,
            tag_id,
        )
    for company_id, attributes in companies:
        company_pk = await conn.fetchval(
            """INSERT INTO companies (env_id, company_id, attributes) VALUES ($1, $2, $3)
               ON CONFLICT (env_id, company_id) DO UPDATE SET attributes = EXCLUDED.attributes
               RETURNING id""",
            env_id,
            company_id,
            attributes,
        )
        await conn.execute(
            "INSERT INTO company_members (env_id, user_pk, company_pk) VALUES ($1, $2, $3)",
            env_id,
            user_pk,
            company_pk,
        )
    if segment_ids:
        await conn.execute(
            """INSERT INTO memberships (env_id, segment_id, user_pk)
               SELECT $1, s, $2 FROM unnest($3::bigint[]) AS s""",
            env_id,
            user_pk,
            segment_ids,
        )
    rows = [(name, day, n) for name, days in events.items() for day, n in days.items()]
    if rows:
        await conn.execute(
            """INSERT INTO event_counts (env_id, user_pk, name, day, count)
               SELECT $1, $2, n, d, c
               FROM unnest($3::text[], $4::date[], $5::int[]) AS x(n, d, c)""",
            env_id,
            user_pk,
            [r[0] for r in rows],
            [r[1] for r in rows],
            [r[2] for r in rows],
        )


#: The id the generated evaluator adds for the condition under test (no real segment's).
TESTED = -1


def env_matches(
    condition: Condition,
    subjects: Mapping[str, Subject],
    now: datetime,
    segments: Mapping[str, int],
) -> set[str]:
    """The names :func:`shared.conditions.env_engine.compile_segments` matches, the condition
    compiled twice over (the second copy tests the memoized leaves) beside a segment leaf."""
    evaluate = compile_segments([(TESTED, condition), (TESTED - 1, condition)], None, segments)
    matched = set()
    for name, subject in subjects.items():
        res = set(subject.segments)  # what a segment leaf sees, as in the closures
        evaluate(subject, now, res)
        assert (TESTED in res) == (TESTED - 1 in res)
        if TESTED in res:
            matched.add(name)
    return matched


class Profiles:
    """Named profiles of one environment, evaluated by both engines."""

    def __init__(self, db: asyncpg.Pool, env_id: int) -> None:
        self.db = db
        self.env_id = env_id
        self.subjects: dict[str, Subject] = {}
        self.names: dict[int, str] = {}
        #: segment key or id (as a string) -> id, for segment leaves
        self.segments: dict[str, int] = {}
        self.companies = 0

    async def segment(self, key: str) -> int:
        """A (manual) segment of the environment that profiles can be members of."""
        seg_id: int = await self.db.fetchval(
            """INSERT INTO segments (env_id, key, name, kind) VALUES ($1, $2, $2, 'manual')
               RETURNING id""",
            self.env_id,
            key,
        )
        self.segments[key] = seg_id
        self.segments[str(seg_id)] = seg_id
        return seg_id

    async def add(
        self,
        name: str,
        attributes: dict[str, Any],
        *,
        user_id: str | None = "",
        first_seen_at: datetime = FIRST_SEEN,
        last_seen_at: datetime = LAST_SEEN,
        tags: frozenset[tuple[str, str]] = frozenset(),
        companies: tuple[dict[str, Any], ...] = (),
        segments: frozenset[str] = frozenset(),
        events: Mapping[str, Mapping[date, int]] | None = None,
    ) -> None:
        """A user with these attributes, and rows in user_tags (tags), company_members (one
        new company per attributes dict), memberships (segment keys made by :meth:`segment`)
        and event_counts ({event: {UTC day: count}})."""
        uid = name if user_id == "" else user_id
        events = events or {}
        async with self.db.acquire() as conn, conn.transaction():
            pk = await conn.fetchval(
                """INSERT INTO users (env_id, user_id, attributes, first_seen_at, last_seen_at)
                   VALUES ($1, $2, $3, $4, $5) RETURNING id""",
                self.env_id,
                uid,
                attributes,
                first_seen_at,
                last_seen_at,
            )
            await write_related(
                conn,
                self.env_id,
                pk,
                tags,
                [(f"co-{self.companies + i}", c) for i, c in enumerate(companies)],
                [self.segments[k] for k in segments],
                events,
            )
        self.companies += len(companies)
        self.subjects[name] = Subject(
            pk,
            uid,
            attributes,
            first_seen_at,
            last_seen_at,
            tags=tags,
            companies=companies,
            segments=frozenset(self.segments[k] for k in segments),
            events={
                e: {(d - EPOCH_DAY).days: n for d, n in days.items()} for e, days in events.items()
            },
        )
        self.names[pk] = name

    async def add_all(self, profiles: Mapping[str, dict[str, Any]]) -> None:
        for name, attributes in profiles.items():
            await self.add(name, attributes)

    async def sql_matches(
        self,
        condition: Any,
        now: datetime = NOW,
        types: Mapping[str, str] | None = None,
        env_param: int | None = None,
    ) -> set[str]:
        fragment, params = compile_sql(
            parse_condition(condition, types),
            first_param=3,
            now_param=2,
            segments=self.segments,
            env_param=env_param,
        )
        rows = await self.db.fetch(
            # "$2 IS NOT NULL" types $2 for conditions that do not use now
            f"SELECT u.id FROM users u WHERE u.env_id = $1 AND $2::timestamptz IS NOT NULL "
            f"AND {fragment}",
            self.env_id,
            now,
            *params,
        )
        return {self.names[r["id"]] for r in rows}

    def python_matches(
        self, condition: Any, now: datetime = NOW, types: Mapping[str, str] | None = None
    ) -> set[str]:
        parsed = parse_condition(condition, types)
        predicate = compile_python(parsed, segments=self.segments)
        matched = {name for name, subject in self.subjects.items() if predicate(subject, now)}
        # the worker's form: every segment of an environment in one generated function
        assert env_matches(parsed, self.subjects, now, self.segments) == matched
        return matched

    async def matches(
        self, condition: Any, now: datetime = NOW, types: Mapping[str, str] | None = None
    ) -> set[str]:
        """The names matched, after asserting that both engines agree."""
        in_python = self.python_matches(condition, now, types)
        in_sql = await self.sql_matches(condition, now, types)
        assert in_python == in_sql, (
            f"python only: {in_python - in_sql}, sql only: {in_sql - in_python}"
        )
        # the same condition under an OR, in the admin's form (relation leaves there are
        # uncorrelated sub-queries of the environment bound to $1)
        under_or = await self.sql_matches({"any": [condition]}, now, types, env_param=1)
        assert under_or == in_sql, f"under OR: {under_or} != {in_sql}"
        return in_sql


@pytest.fixture
async def profiles(db: asyncpg.Pool, env: EnvironmentKeys) -> Profiles:
    return Profiles(db, env.id)
