"""Helpers for evaluating conditions with both engines: profiles are inserted as real rows of
``users`` for the test's environment, the SQL engine runs on PostgreSQL, the Python engine on
the same profiles, and every check asserts that the two agree before looking at the result."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from shared.conditions import Subject, compile_python, compile_sql, parse_condition
from shared.environments import EnvironmentKeys

NOW = datetime(2024, 3, 2, 12, 0, tzinfo=UTC)
FIRST_SEEN = datetime(2024, 1, 15, 8, 30, tzinfo=UTC)
LAST_SEEN = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)


class Profiles:
    """Named profiles of one environment, evaluated by both engines."""

    def __init__(self, db: asyncpg.Pool, env_id: int) -> None:
        self.db = db
        self.env_id = env_id
        self.subjects: dict[str, Subject] = {}
        self.names: dict[int, str] = {}

    async def add(
        self,
        name: str,
        attributes: dict[str, Any],
        *,
        user_id: str | None = "",
        first_seen_at: datetime = FIRST_SEEN,
        last_seen_at: datetime = LAST_SEEN,
    ) -> None:
        uid = name if user_id == "" else user_id
        pk = await self.db.fetchval(
            """INSERT INTO users (env_id, user_id, attributes, first_seen_at, last_seen_at)
               VALUES ($1, $2, $3, $4, $5) RETURNING id""",
            self.env_id,
            uid,
            attributes,
            first_seen_at,
            last_seen_at,
        )
        self.subjects[name] = Subject(pk, uid, attributes, first_seen_at, last_seen_at)
        self.names[pk] = name

    async def add_all(self, profiles: Mapping[str, dict[str, Any]]) -> None:
        for name, attributes in profiles.items():
            await self.add(name, attributes)

    async def sql_matches(
        self, condition: Any, now: datetime = NOW, types: Mapping[str, str] | None = None
    ) -> set[str]:
        fragment, params = compile_sql(
            parse_condition(condition, types), first_param=3, now_param=2
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
        predicate = compile_python(parse_condition(condition, types))
        return {name for name, subject in self.subjects.items() if predicate(subject, now)}

    async def matches(
        self, condition: Any, now: datetime = NOW, types: Mapping[str, str] | None = None
    ) -> set[str]:
        """The names matched, after asserting that both engines agree."""
        in_python = self.python_matches(condition, now, types)
        in_sql = await self.sql_matches(condition, now, types)
        assert in_python == in_sql, (
            f"python only: {in_python - in_sql}, sql only: {in_sql - in_python}"
        )
        return in_sql


@pytest.fixture
async def profiles(db: asyncpg.Pool, env: EnvironmentKeys) -> Profiles:
    return Profiles(db, env.id)
