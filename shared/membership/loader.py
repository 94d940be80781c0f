"""Everything a condition reads of a set of users, loaded in one place: the worker evaluates
the users a batch touched with it, and explain shows one user's evaluation with it, so the
two can never read a user differently.

A condition reads a user's attributes and first/last seen times (the caller has them: the
worker's profiles in memory, explain's row), and beyond those (:class:`Inputs`): the tags,
the attributes of each company, per-day event counts, and the segments they belong to.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import msgspec

from shared.conditions import Subject
from shared.db import Conn
from shared.membership.store import stored_memberships

TagSet = frozenset[tuple[str, str]]


class Inputs(msgspec.Struct, kw_only=True):
    """What conditions read of users beyond their own row, by user pk (missing: nothing)."""

    tags: Mapping[int, Iterable[tuple[str, str]]] = msgspec.field(default_factory=dict)
    companies: Mapping[int, tuple[dict[str, Any], ...]] = msgspec.field(default_factory=dict)
    events: Mapping[int, dict[str, dict[int, int]]] = msgspec.field(default_factory=dict)
    segments: Mapping[int, set[int]] = msgspec.field(default_factory=dict)


async def load_inputs(
    conn: Conn,
    env_id: int,
    pks: list[int],
    *,
    tags: bool,
    companies: bool,
    events: Iterable[str],
    segments: bool,
) -> Inputs:
    """Load what is asked for the users ``pks`` (``events``: the event names conditions use)."""
    names = sorted(set(events))
    return Inputs(
        tags=await stored_tags(conn, env_id, pks) if tags else {},
        companies=await company_attributes(conn, env_id, pks) if companies else {},
        events=await event_counts(conn, env_id, pks, names) if names else {},
        segments=await stored_memberships(conn, env_id, pks) if segments else {},
    )


def subject(
    pk: int,
    user_id: str | None,
    attributes: dict[str, Any],
    first_seen_at: datetime,
    last_seen_at: datetime,
    inputs: Inputs,
) -> Subject:
    """The :class:`Subject` conditions are evaluated on."""
    return Subject(
        user_pk=pk,
        user_id=user_id,
        attributes=attributes,
        first_seen_at=first_seen_at,
        last_seen_at=last_seen_at,
        tags=frozenset(inputs.tags.get(pk, ())),
        companies=inputs.companies.get(pk, ()),
        segments=frozenset(inputs.segments.get(pk, ())),
        events=inputs.events.get(pk, {}),
    )


async def stored_tags(
    conn: Conn, env_id: int, user_pks: list[int]
) -> dict[int, set[tuple[str, str]]]:
    """{user pk: {(key, value)}} as stored."""
    out: dict[int, set[tuple[str, str]]] = defaultdict(set)
    rows = await conn.fetch(
        """SELECT ut.user_pk, t.key, t.value FROM user_tags ut
           JOIN tags t ON t.env_id = ut.env_id AND t.id = ut.tag_id
           WHERE ut.env_id = $1 AND ut.user_pk = ANY($2)""",
        env_id,
        user_pks,
    )
    for row in rows:
        out[row["user_pk"]].add((row["key"], row["value"]))
    return out


async def company_attributes(
    conn: Conn, env_id: int, user_pks: list[int]
) -> dict[int, tuple[dict[str, Any], ...]]:
    """{user pk: attributes of each of the user's companies, by company id}."""
    out: dict[int, list[dict[str, Any]]] = defaultdict(list)
    rows = await conn.fetch(
        """SELECT m.user_pk, c.attributes FROM company_members m
           JOIN companies c ON c.env_id = m.env_id AND c.id = m.company_pk
           WHERE m.env_id = $1 AND m.user_pk = ANY($2) ORDER BY m.user_pk, c.id""",
        env_id,
        user_pks,
    )
    for row in rows:
        out[row["user_pk"]].append(row["attributes"])
    return {pk: tuple(attrs) for pk, attrs in out.items()}


async def event_counts(
    conn: Conn, env_id: int, user_pks: list[int], names: list[str]
) -> dict[int, dict[str, dict[int, int]]]:
    """{user pk: {event name: {UTC epoch day: count}}} for the events ``names``."""
    out: dict[int, dict[str, dict[int, int]]] = defaultdict(lambda: defaultdict(dict))
    rows = await conn.fetch(
        """SELECT user_pk, name, day - DATE '1970-01-01' AS day, count FROM event_counts
           WHERE env_id = $1 AND user_pk = ANY($2) AND name = ANY($3)""",
        env_id,
        user_pks,
        names,
    )
    for row in rows:
        out[row["user_pk"]][row["name"]][row["day"]] = row["count"]
    return out
