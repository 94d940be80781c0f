"""Users named in admin bodies (``{"userIds": [...], "emails": [...]}``): validated, resolved to
profiles and locked, and, where asked, created.

A userId resolves to the profile with that userId, else to the profile an anonymous id (or
alias) of that name links to. An email resolves to every profile whose ``email`` attribute is
that address, compared case-insensitively.

Unknown userIds can be created (adding a CSV of future users to a manual segment or a tag):
the profile is inserted as an identified user with no attributes and enters All users at once;
an empty identify message for it goes into the inbox in the same transaction, so the worker
evaluates its dynamic segments exactly as for a first identify.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any

import asyncpg
import msgspec
from msgspec import Meta

from shared.db import Conn
from shared.http import ApiError
from shared.membership import record_changes
from shared.messages import InboxMessage, MessageError, inbox_encoder, normalise_id

#: Most userIds plus emails one call may name.
MAX_REFS = 10_000

Email = Annotated[str, Meta(min_length=1, max_length=320)]


class UserRefs(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``{"userIds": [...], "emails": [...]}``; userIds may be strings or numbers."""

    userIds: list[Any] = []
    emails: list[Email] = []


refs_decoder = msgspec.json.Decoder(UserRefs)


class Resolved(msgspec.Struct, kw_only=True):
    """Profiles a body named, locked for the caller's transaction."""

    #: profile primary keys, ascending, without duplicates
    pks: list[int]
    #: userIds created by this call
    created: list[str]
    #: userIds that name no profile (only when not creating)
    unknown_user_ids: list[str]
    #: emails that match no profile, as given
    unknown_emails: list[str]


def checked_refs(body: UserRefs) -> tuple[list[str], list[str]]:
    """(userIds as strings, emails) of a body, distinct and in order; 422 naming the entry
    that is not a usable id, 400 when the body names nothing or too much."""
    if not body.userIds and not body.emails:
        raise ApiError(422, "userIds: give userIds or emails (or both)", "userIds")
    if len(body.userIds) + len(body.emails) > MAX_REFS:
        raise ApiError(
            422, f"userIds: at most {MAX_REFS} userIds and emails in one call", "userIds"
        )
    user_ids: dict[str, None] = {}
    for i, raw in enumerate(body.userIds):
        try:
            text = normalise_id(f"userIds[{i}]", raw)
        except MessageError as exc:
            raise ApiError(422, str(exc), exc.field) from exc
        if text is None:
            raise ApiError(422, f"userIds[{i}]: must not be null", f"userIds[{i}]")
        user_ids[text] = None
    emails: dict[str, None] = {}
    for i, email in enumerate(body.emails):
        if "@" not in email or not email.strip():
            raise ApiError(422, f"emails[{i}]: {email!r} is not an email address", f"emails[{i}]")
        emails[email.strip()] = None
    return list(user_ids), list(emails)


_BY_USER_ID = """
SELECT x.ident, coalesce(u.id, i.user_pk) AS pk
FROM unnest($2::text[]) AS x(ident)
LEFT JOIN users u ON u.env_id = $1 AND u.user_id = x.ident
LEFT JOIN identities i ON i.env_id = $1 AND i.anonymous_id = x.ident
"""

_BY_EMAIL = """
SELECT id, email_lower AS email FROM users
WHERE env_id = $1 AND email_lower = ANY($2::text[])
"""

_CREATE = """
INSERT INTO users (env_id, user_id, first_seen_at, last_seen_at, membership_version)
SELECT $1, u, now(), now(), 1 FROM unnest($2::text[]) AS x(u) ORDER BY u
ON CONFLICT (env_id, user_id) WHERE user_id IS NOT NULL DO NOTHING
RETURNING id, user_id
"""

_LOCK = "SELECT id FROM users WHERE env_id = $1 AND id = ANY($2::bigint[]) ORDER BY id FOR UPDATE"


async def _lookup(
    conn: Conn, env_id: int, user_ids: list[str], emails: list[str]
) -> tuple[dict[str, int], dict[str, list[int]]]:
    by_id: dict[str, int] = {}
    if user_ids:
        for row in await conn.fetch(_BY_USER_ID, env_id, user_ids):
            if row["pk"] is not None:
                by_id[row["ident"]] = row["pk"]
    by_email: dict[str, list[int]] = {}
    if emails:
        for row in await conn.fetch(_BY_EMAIL, env_id, sorted({e.lower() for e in emails})):
            by_email.setdefault(row["email"], []).append(row["id"])
    return by_id, by_email


async def resolve_users(
    conn: Conn, env_id: int, user_ids: list[str], emails: list[str], *, create: bool
) -> Resolved:
    """Resolve (and with ``create``, create) the named users and lock their rows in id order,
    the order every writer of memberships locks in. Call inside a transaction."""
    created: list[str] = []
    for _ in range(3):
        by_id, by_email = await _lookup(conn, env_id, user_ids, emails)
        missing = [u for u in user_ids if u not in by_id]
        if create and missing:
            rows = await conn.fetch(_CREATE, env_id, missing)
            for row in rows:
                by_id[row["user_id"]] = row["id"]
                created.append(row["user_id"])
            await _announce(conn, env_id, [r["id"] for r in rows], [r["user_id"] for r in rows])
            # another writer created the rest meanwhile: they resolve on the next look-up
            missing = [u for u in user_ids if u not in by_id]
            if missing:
                continue
        wanted = set(by_id.values()) | {pk for pks in by_email.values() for pk in pks}
        locked = [r["id"] for r in await conn.fetch(_LOCK, env_id, sorted(wanted))]
        if len(locked) == len(wanted):
            return Resolved(
                pks=locked,
                created=sorted(created),
                unknown_user_ids=missing,
                unknown_emails=[e for e in emails if e.lower() not in by_email],
            )
        # a profile was merged away (anonymous -> identified) between look-up and lock: again
    raise ApiError(409, "userIds: the users changed while being resolved; retry", "userIds")


async def _announce(conn: Conn, env_id: int, pks: list[int], user_ids: list[str]) -> None:
    """New profiles enter All users now; an empty identify per profile lets the worker
    evaluate their dynamic segments as for any new user."""
    if not pks:
        return
    all_users = await conn.fetchval(
        "SELECT id FROM segments WHERE env_id = $1 AND kind = 'all'", env_id
    )
    if all_users is not None:
        await conn.execute(
            """INSERT INTO memberships (env_id, segment_id, user_pk)
               SELECT $1, $2, u FROM unnest($3::bigint[]) AS x(u) ON CONFLICT DO NOTHING""",
            env_id,
            all_users,
            pks,
        )
        await record_changes(conn, env_id, [all_users] * len(pks), pks, [True] * len(pks), "admin")
    now_ms = int(time.time() * 1000)
    bodies = [
        inbox_encoder.encode(
            InboxMessage(
                type="identify",
                messageId=f"admin-{uuid.uuid4()}",
                timestamp=now_ms,
                receivedAt=now_ms,
                userId=user_id,
            )
        )
        for user_id in user_ids
    ]
    await conn.execute(
        "INSERT INTO inbox (env_id, body) SELECT $1, b FROM unnest($2::bytea[]) AS x(b)",
        env_id,
        bodies,
    )


# The user lists of a segment (memberships) and of a tag (user_tags): table -> owner column.
_PAGED = {"memberships": "segment_id", "user_tags": "tag_id"}


async def user_ids_page(
    conn: Conn | asyncpg.Pool, table: str, env_id: int, owner_id: int, limit: int, after: int
) -> tuple[list[str], int | None]:
    """(ids of up to ``limit`` users listed in ``table`` ("memberships" of a segment or
    "user_tags" of a tag) with user pk > ``after``; the pk to continue after, or None on the
    last page). Anonymous users are named by an anonymous id. Keyset pagination on the pk."""
    column = _PAGED[table]  # a constant: never a caller's string in the SQL text
    rows = await conn.fetch(
        f"""SELECT x.user_pk,
                   coalesce(u.user_id, (SELECT min(i.anonymous_id) FROM identities i
                                        WHERE i.env_id = u.env_id AND i.user_pk = u.id)) AS ident
            FROM {table} x JOIN users u ON u.env_id = x.env_id AND u.id = x.user_pk
            WHERE x.env_id = $1 AND x.{column} = $2 AND x.user_pk > $3
            ORDER BY x.user_pk LIMIT $4""",
        env_id,
        owner_id,
        after,
        limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    ids = [r["ident"] if r["ident"] is not None else f"#{r['user_pk']}" for r in rows]
    return ids, (rows[-1]["user_pk"] if more else None)
