"""Segment definitions in PostgreSQL: create, read, update, delete, members.

Every function takes a connection and an environment id; a function that changes several rows
does it in one transaction, so a refused request (409, 422) leaves nothing half-saved.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import asyncpg
from msgspec import UNSET

from services.admin.segments.schemas import Progress, Segment, SegmentCreate, SegmentUpdate
from shared.attribute_types import load_types
from shared.conditions import (
    ConditionError,
    compile_sql,
    condition_to_json,
    parse_condition,
    referenced_segments,
)
from shared.db import Conn
from shared.http import ApiError
from shared.member_counts import count_sql
from shared.membership.graph import GraphError, SegmentGraph, segment_names, segment_refs
from shared.membership.locking import lock_definitions

MAX_KEY = 100

_COLUMNS = f"""s.id, s.key, s.name, s.description, s.kind, s.conditions, s.status, s.version,
       s.status_reason, s.created_at, s.updated_at,
       {count_sql("s", "s.env_id", "s.id")} AS member_count,
       (SELECT jsonb_build_object('phase', p.phase, 'percent', p.percent)
        FROM segment_progress p
        WHERE p.env_id = s.env_id AND p.segment_id = s.id) AS progress"""


def to_segment(row: asyncpg.Record) -> Segment:
    """The API shape of a row selected with the segment columns."""
    return Segment(
        id=str(row["id"]),
        key=row["key"],
        name=row["name"],
        description=row["description"],
        kind=row["kind"],
        conditions=row["conditions"],
        status=row["status"],
        version=row["version"],
        memberCount=row["member_count"],
        progress=_progress(row["status"], row["progress"]),
        statusReason=row["status_reason"],
        createdAt=row["created_at"],
        updatedAt=row["updated_at"],
    )


def _progress(status: str, stored: dict[str, Any] | None) -> Progress | None:
    """Where a computing segment's recompute is: queued until the worker starts it."""
    if status != "computing":
        return None
    if stored is None:
        return Progress(phase="queued", percent=0)
    return Progress(phase=stored["phase"], percent=stored["percent"])


def kind_phrase(kind: str) -> str:
    """A segment's kind for a sentence: "a dynamic segment", "the built-in All users
    segment"."""
    return "the built-in All users segment" if kind == "all" else f"a {kind} segment"


def slugify(name: str) -> str:
    """A key from a name: accents dropped, lowercase, runs of other characters → '-'.
    Never empty and never all digits (a numeric path segment means an id)."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[: MAX_KEY - 10].strip("-")
    if not slug:
        return "segment"
    return f"segment-{slug}" if slug.isdigit() else slug


def _check_key(key: str) -> None:
    if key.isdigit():
        raise ApiError(422, "key: must not be all digits (numbers address segments by id)", "key")


def _check_name(name: str) -> str:
    if not name.strip():
        raise ApiError(422, "name: must not be blank", "name")
    return name.strip()


async def normalise_conditions(conn: Conn, env_id: int, raw: Any) -> Any:
    """Validated, normalised condition JSON, or a 422 naming the offending node's path. The
    environment's attribute types apply (an operator or value that doesn't fit the declared
    or inferred type is refused), and the tree must compile to SQL, as it will be run."""
    types = await load_types(conn, env_id)
    try:
        cond = parse_condition(raw, types)
        compile_sql(cond, types=types, segments=await _segment_names(conn, env_id, cond))
        return condition_to_json(cond)
    except ConditionError as exc:
        raise ApiError(422, str(exc), exc.path) from exc


async def _segment_names(conn: Conn, env_id: int, cond: Any) -> dict[str, int]:
    """The segment names a condition uses, resolved (unknown ones map to a placeholder: the
    reference check reports them with its own message)."""
    names = referenced_segments(cond)
    if not names:
        return {}
    known = await segment_names(conn, env_id)
    return {n: known.get(n, 0) for n in names}


def as_id(ref: str) -> int | None:
    """The bigint id a path reference (a key or an id) may stand for, or None."""
    if ref.isascii() and ref.isdigit() and len(ref) < 19:
        return int(ref)
    return None


async def find_segment(
    conn: Conn | asyncpg.Pool, env_id: int, ref: str, *, lock: bool = False
) -> asyncpg.Record | None:
    """The segment whose key is ``ref``, else whose id is ``ref``."""
    sql = f"""SELECT {_COLUMNS} FROM segments s
              WHERE s.env_id = $1 AND (s.key = $2 OR s.id = $3)
              ORDER BY s.key = $2 DESC LIMIT 1"""
    if lock:
        sql += " FOR UPDATE OF s"
    return await conn.fetchrow(sql, env_id, ref, as_id(ref))


async def require_segment(conn: Conn | asyncpg.Pool, env_id: int, ref: str) -> asyncpg.Record:
    """:func:`find_segment` or a 404."""
    row = await find_segment(conn, env_id, ref)
    if row is None:
        raise ApiError(404, f"segment: no segment with key or id {ref!r}", "segment")
    return row


async def list_segments(conn: Conn | asyncpg.Pool, env_id: int) -> list[Segment]:
    """Every segment of the environment with its live member count, oldest first."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM segments s WHERE s.env_id = $1 ORDER BY s.id", env_id
    )
    return [to_segment(r) for r in rows]


async def _graph(conn: Conn, env_id: int) -> SegmentGraph:
    # Serialises definition changes within one environment (two concurrent edits cannot create
    # a cycle of references between them), and waits for worker batches reading definitions.
    await lock_definitions(conn, env_id)
    rows = await conn.fetch("SELECT id, key, conditions FROM segments WHERE env_id = $1", env_id)
    return SegmentGraph(
        {r["key"]: r["id"] for r in rows},
        {r["id"]: r["conditions"] for r in rows if r["conditions"] is not None},
    )


def _check(graph: SegmentGraph, seg_id: int, key: str, conditions: Any) -> None:
    """The graph's checks of new conditions, as a 422 naming the offending node."""
    try:
        graph.check(seg_id, key, conditions)
    except GraphError as exc:
        raise ApiError(422, str(exc), exc.path) from exc


async def _free_key(conn: Conn, env_id: int, base: str) -> str:
    # base is [a-z0-9-] only, so it holds no LIKE wildcard.
    taken = {
        r["key"]
        for r in await conn.fetch(
            "SELECT key FROM segments WHERE env_id = $1 AND (key = $2 OR key LIKE $2 || '-%')",
            env_id,
            base,
        )
    }
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


async def create_segment(conn: Conn, env_id: int, body: SegmentCreate) -> Segment:
    """Insert a segment (a dynamic one with status 'computing'); 409 on a duplicate key."""
    name = _check_name(body.name)
    conditions: Any = None
    if body.kind == "dynamic":
        if body.conditions is None:
            raise ApiError(422, "conditions: required for a dynamic segment", "conditions")
        conditions = await normalise_conditions(conn, env_id, body.conditions)
    elif body.conditions is not None:
        raise ApiError(422, "conditions: a manual segment has no conditions", "conditions")
    if body.key is not None:
        _check_key(body.key)
    status = "computing" if body.kind == "dynamic" else "ready"
    async with conn.transaction():
        graph = await _graph(conn, env_id)
        key = body.key if body.key is not None else await _free_key(conn, env_id, slugify(name))
        if key in graph.keys:
            raise ApiError(409, f"key: a segment with key {key!r} already exists", "key")
        seg_id = await conn.fetchval(
            """INSERT INTO segments (env_id, key, name, description, kind, conditions, status)
               VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id""",
            env_id,
            key,
            name,
            body.description,
            body.kind,
            conditions,
            status,
        )
        if conditions is not None:
            _check(graph, seg_id, key, conditions)
        row = await find_segment(conn, env_id, str(seg_id))
    assert row is not None
    return to_segment(row)


async def update_segment(
    conn: Conn, env_id: int, ref: str, patch: SegmentUpdate
) -> tuple[Segment, bool]:
    """Apply ``patch``; returns (segment, whether its conditions changed so that a bulk
    recompute of its new version is due)."""
    async with conn.transaction():
        graph = await _graph(conn, env_id)
        row = await find_segment(conn, env_id, ref, lock=True)
        if row is None:
            raise ApiError(404, f"segment: no segment with key or id {ref!r}", "segment")
        if row["kind"] == "all":
            raise ApiError(409, "segment: the built-in All users segment cannot be changed")
        if patch.kind is not UNSET and patch.kind != row["kind"]:
            raise ApiError(422, f"kind: cannot be changed (it is {row['kind']!r})", "kind")
        name = row["name"] if patch.name is UNSET else _check_name(patch.name)
        description = row["description"] if patch.description is UNSET else patch.description
        key = row["key"]
        if patch.key is not UNSET and patch.key != key:
            _check_key(patch.key)
            if patch.key in graph.keys:
                raise ApiError(409, f"key: a segment with key {patch.key!r} already exists", "key")
            users = [
                graph.names[s]
                for s, cond in graph.conditions.items()
                if any(r == key for _, r in segment_refs(cond))
            ]
            if users:
                raise ApiError(
                    409, f"key: segments {', '.join(sorted(users))} refer to {key!r} by key", "key"
                )
            key = patch.key
        conditions = row["conditions"]
        changed = False
        if patch.conditions is not UNSET:
            if row["kind"] == "manual":
                if patch.conditions is not None:
                    raise ApiError(
                        422, "conditions: a manual segment has no conditions", "conditions"
                    )
            elif patch.conditions is None:
                raise ApiError(422, "conditions: required for a dynamic segment", "conditions")
            else:
                new = await normalise_conditions(conn, env_id, patch.conditions)
                if new != conditions:
                    _check(graph, row["id"], key, new)
                    conditions, changed = new, True
        await conn.execute(
            """UPDATE segments
               SET name = $3, key = $4, description = $5, conditions = $6,
                   version = version + $7::int,
                   status = CASE WHEN $7::int = 1 THEN 'computing' ELSE status END,
                   updated_at = now()
               WHERE env_id = $1 AND id = $2""",
            env_id,
            row["id"],
            name,
            key,
            description,
            conditions,
            int(changed),
        )
        updated = await find_segment(conn, env_id, str(row["id"]))
    assert updated is not None
    return to_segment(updated), changed


async def delete_segment(conn: Conn, env_id: int, ref: str) -> None:
    """Delete a segment and (by cascade) its memberships; 409 for All users or a segment
    that other segments' conditions refer to."""
    async with conn.transaction():
        graph = await _graph(conn, env_id)
        row = await find_segment(conn, env_id, ref, lock=True)
        if row is None:
            raise ApiError(404, f"segment: no segment with key or id {ref!r}", "segment")
        if row["kind"] == "all":
            raise ApiError(409, "segment: the built-in All users segment cannot be deleted")
        referrers = graph.referrers(row["id"])
        if referrers:
            raise ApiError(
                409,
                f"segment: segments {', '.join(referrers)} refer to it in their conditions",
                "segment",
            )
        await conn.execute("DELETE FROM segments WHERE env_id = $1 AND id = $2", env_id, row["id"])
