"""Tags (key:value labels on users) in PostgreSQL: create, list, rename, delete, attach, detach.

Segments use tags through tag leaves (``{"tag": {"key": K, "value": V}}``, or any value of K
when ``value`` is absent), which name tags by key and value, as identify does. Hence:

- a tag's auto-segment is an ordinary dynamic segment named "Key: Value" whose conditions are
  that one leaf; ``tags.segment_id`` remembers it;
- renaming a tag rewrites every leaf naming exactly that key and value (its auto-segment's
  included, whose name follows too unless someone renamed it), so segments keep meaning the
  same users; leaves naming a key alone are left alone;
- deleting a tag deletes its auto-segment (409, and nothing deleted, when other segments refer
  to that segment); leaves on the tag elsewhere then match nobody;
- whenever who carries which tag changes, the dynamic segments with a leaf on that key are
  recomputed (and the segments that refer to them).
"""

from __future__ import annotations

import asyncpg
import msgspec
from msgspec import UNSET

from services.admin.segments.dependents import Dependents, data_dependents
from services.admin.segments.references import rename_tag, tag_refs
from services.admin.segments.schemas import SegmentCreate, SegmentUpdate
from services.admin.segments.service import (
    as_id,
    create_segment,
    delete_segment,
    find_segment,
    update_segment,
)
from services.admin.tags.schemas import Tag, TagCreate, TagUpdate, TagUsersChange
from services.admin.users.refs import UserRefs, checked_refs, resolve_users
from shared.db import Conn
from shared.http import ApiError
from shared.member_counts import count_sql

_COLUMNS = f"""t.id, t.key, t.value, t.created_at, s.id AS segment_id, s.key AS segment_key,
       {count_sql("t", "t.env_id", "t.id")} AS user_count"""
_FROM = "tags t LEFT JOIN segments s ON s.env_id = t.env_id AND s.id = t.segment_id"


class TagOutcome(msgspec.Struct, kw_only=True):
    """What a tag change needs after its commit: recomputes of new segment versions
    (definitions changed) and of segments whose data changed."""

    tag: Tag | None = None
    versions: list[tuple[int, int]] = []
    dependents: Dependents = msgspec.field(default_factory=Dependents)


def _part(value: str, field: str) -> str:
    value = value.strip()
    if not value:
        raise ApiError(422, f"{field}: must not be blank", field)
    return value


def auto_name(key: str, value: str) -> str:
    """The name of a tag's auto-segment ("Department: Sales"), within the name limit."""
    return f"{key}: {value}"[:200]


def tag_leaf(key: str, value: str) -> dict[str, dict[str, str]]:
    return {"tag": {"key": key, "value": value}}


def _to_tag(r: asyncpg.Record) -> Tag:
    """The API shape of a row selected with the tag columns."""
    return Tag(
        id=str(r["id"]),
        key=r["key"],
        value=r["value"],
        userCount=r["user_count"],
        segmentId=None if r["segment_id"] is None else str(r["segment_id"]),
        segmentKey=r["segment_key"],
        createdAt=r["created_at"],
    )


def _tag_id(ref: str) -> int:
    found = as_id(ref)
    if found is None:
        raise ApiError(404, f"tag: no tag with id {ref!r}", "tag")
    return found


async def read_tag(conn: Conn, env_id: int, tag_id: int) -> Tag | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM {_FROM} WHERE t.env_id = $1 AND t.id = $2", env_id, tag_id
    )
    return None if row is None else _to_tag(row)


async def require_tag(conn: Conn, env_id: int, ref: str) -> Tag:
    found = await read_tag(conn, env_id, _tag_id(ref))
    if found is None:
        raise ApiError(404, f"tag: no tag with id {ref!r}", "tag")
    return found


async def list_tags(conn: Conn, env_id: int, key: str | None) -> list[Tag]:
    """Every tag (of key ``key`` when given) with its user count, by key then value."""
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM {_FROM}
            WHERE t.env_id = $1 AND ($2::text IS NULL OR t.key = $2)
            ORDER BY t.key, t.value""",
        env_id,
        key,
    )
    return [_to_tag(r) for r in rows]


async def _lock(conn: Conn, env_id: int, ref: str) -> tuple[int, str, str, int | None]:
    row = await conn.fetchrow(
        "SELECT id, key, value, segment_id FROM tags WHERE env_id = $1 AND id = $2 FOR UPDATE",
        env_id,
        _tag_id(ref),
    )
    if row is None:
        raise ApiError(404, f"tag: no tag with id {ref!r}", "tag")
    return row["id"], row["key"], row["value"], row["segment_id"]


async def _create_auto_segment(
    conn: Conn, env_id: int, tag_id: int, key: str, value: str
) -> tuple[int, int]:
    segment = await create_segment(
        conn,
        env_id,
        SegmentCreate(
            name=auto_name(key, value),
            kind="dynamic",
            description="Users carrying this tag (the tag's auto-segment).",
            conditions=tag_leaf(key, value),
        ),
    )
    await conn.execute(
        "UPDATE tags SET segment_id = $3 WHERE env_id = $1 AND id = $2",
        env_id,
        tag_id,
        int(segment.id),
    )
    return int(segment.id), segment.version


async def create_tag(conn: Conn, env_id: int, body: TagCreate) -> TagOutcome:
    """Insert a tag (and its auto-segment when asked); 409 when it exists."""
    key, value = _part(body.key, "key"), _part(body.value, "value")
    versions: list[tuple[int, int]] = []
    async with conn.transaction():
        tag_id = await conn.fetchval(
            """INSERT INTO tags (env_id, key, value) VALUES ($1, $2, $3)
               ON CONFLICT (env_id, key, value) DO NOTHING RETURNING id""",
            env_id,
            key,
            value,
        )
        if tag_id is None:
            raise ApiError(409, f"key: the tag {key}: {value} already exists", "key")
        if body.autoSegment:
            versions.append(await _create_auto_segment(conn, env_id, tag_id, key, value))
        tag = await read_tag(conn, env_id, tag_id)
    return TagOutcome(tag=tag, versions=versions)


async def update_tag(conn: Conn, env_id: int, ref: str, body: TagUpdate) -> TagOutcome:
    """Rename a tag and/or give it an auto-segment; see the module docstring."""
    async with conn.transaction():
        tag_id, old_key, old_value, segment_id = await _lock(conn, env_id, ref)
        key = old_key if body.key is UNSET else _part(body.key, "key")
        value = old_value if body.value is UNSET else _part(body.value, "value")
        versions: list[tuple[int, int]] = []
        dependents = Dependents()
        if (key, value) != (old_key, old_value):
            try:
                async with conn.transaction():
                    await conn.execute(
                        "UPDATE tags SET key = $3, value = $4 WHERE env_id = $1 AND id = $2",
                        env_id,
                        tag_id,
                        key,
                        value,
                    )
            except asyncpg.UniqueViolationError:
                raise ApiError(409, f"key: the tag {key}: {value} already exists", "key") from None
            versions = await _rename_leaves(
                conn, env_id, (old_key, old_value), (key, value), segment_id
            )
            # leaves on a key alone gain or lose this tag's users
            dependents = await data_dependents(conn, env_id, tag_keys={old_key, key})
        if body.autoSegment is True:
            exists = segment_id is not None and (
                await find_segment(conn, env_id, str(segment_id)) is not None
            )
            if not exists:
                versions.append(await _create_auto_segment(conn, env_id, tag_id, key, value))
        tag = await read_tag(conn, env_id, tag_id)
    return TagOutcome(tag=tag, versions=versions, dependents=dependents)


async def _rename_leaves(
    conn: Conn, env_id: int, old: tuple[str, str], new: tuple[str, str], auto_id: int | None
) -> list[tuple[int, int]]:
    """Rewrite the leaves naming tag ``old`` in every dynamic segment; the auto-segment's
    name follows when it still is the automatic one. Returns the new (id, version) pairs."""
    rows = await conn.fetch(
        "SELECT id, name, conditions FROM segments WHERE env_id = $1 AND kind = 'dynamic'",
        env_id,
    )
    out: list[tuple[int, int]] = []
    for row in rows:
        if not any((k, v) == old for k, v in tag_refs(row["conditions"])):
            continue
        patch = SegmentUpdate(conditions=rename_tag(row["conditions"], old, new))
        if row["id"] == auto_id and row["name"] == auto_name(*old):
            patch.name = auto_name(*new)
        segment, changed = await update_segment(conn, env_id, str(row["id"]), patch)
        if changed:
            out.append((int(segment.id), segment.version))
    return out


async def _segments_using(
    conn: Conn, env_id: int, key: str, value: str, own_segment: int | None
) -> list[str]:
    """Keys of the segments (the tag's own auto-segment aside) whose conditions would match
    nobody without tag ``key: value``: a leaf naming it, or naming any value of ``key`` when
    it is the key's last tag."""
    last_of_key = not await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM tags WHERE env_id = $1 AND key = $2 AND value <> $3)",
        env_id,
        key,
        value,
    )
    rows = await conn.fetch(
        "SELECT id, key, conditions FROM segments WHERE env_id = $1 AND conditions IS NOT NULL",
        env_id,
    )
    return sorted(
        row["key"]
        for row in rows
        if row["id"] != own_segment
        and any(
            k == key and (v == value or (v is None and last_of_key))
            for k, v in tag_refs(row["conditions"])
        )
    )


async def delete_tag(conn: Conn, env_id: int, ref: str) -> TagOutcome:
    """Delete a tag, who carries it, and its auto-segment. 409, deleting nothing, when other
    segments' conditions use the tag (they would match nobody) or refer to its auto-segment,
    as for deleting a segment others refer to."""
    async with conn.transaction():
        tag_id, key, value, segment_id = await _lock(conn, env_id, ref)
        users = await _segments_using(conn, env_id, key, value, segment_id)
        if users:
            raise ApiError(
                409,
                f"tag: segments {', '.join(users)} use {key}: {value} in their conditions and "
                "would match nobody; change them first",
                "tag",
            )
        if segment_id is not None and await find_segment(conn, env_id, str(segment_id)):
            await delete_segment(conn, env_id, str(segment_id))
        await conn.execute("DELETE FROM tags WHERE env_id = $1 AND id = $2", env_id, tag_id)
        dependents = await data_dependents(conn, env_id, tag_keys={key})
    return TagOutcome(dependents=dependents)


async def change_tag_users(
    conn: Conn, env_id: int, ref: str, body: UserRefs, *, attach: bool
) -> tuple[TagUsersChange, bool, Dependents]:
    """Attach the tag to (or detach it from) the users ``body`` names, set-based. Returns the
    answer, whether users were created, and the segments to recompute."""
    user_ids, emails = checked_refs(body)
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT id, key FROM tags WHERE env_id = $1 AND id = $2 FOR SHARE",
            env_id,
            _tag_id(ref),
        )
        if row is None:
            raise ApiError(404, f"tag: no tag with id {ref!r}", "tag")
        # locked like memberships writers do: the worker reads tags under these locks
        users = await resolve_users(conn, env_id, user_ids, emails, create=attach)
        if attach:
            changed = await conn.fetch(
                """INSERT INTO user_tags (env_id, user_pk, tag_id)
                   SELECT $1, u, $2 FROM unnest($3::bigint[]) AS x(u)
                   ON CONFLICT DO NOTHING RETURNING user_pk""",
                env_id,
                row["id"],
                users.pks,
            )
        else:
            changed = await conn.fetch(
                """DELETE FROM user_tags
                   WHERE env_id = $1 AND tag_id = $2 AND user_pk = ANY($3::bigint[])
                   RETURNING user_pk""",
                env_id,
                row["id"],
                users.pks,
            )
        dependents = Dependents()
        if changed or users.created:
            dependents = await data_dependents(conn, env_id, tag_keys={row["key"]})
    answer = TagUsersChange(
        attached=len(changed) if attach else 0,
        detached=0 if attach else len(changed),
        created=users.created,
        unknownUserIds=users.unknown_user_ids,
        unknownEmails=users.unknown_emails,
    )
    return answer, bool(users.created), dependents
