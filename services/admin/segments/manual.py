"""Members of manual segments added and removed through the admin API, by userId or email.

One call is one transaction of set-based statements: the named users are resolved and locked
in id order (as every writer of memberships locks), the memberships inserted or deleted, each
real entry and exit logged with cause ``admin`` (which queues the webhook deliveries), and the
changed users' ``membership_version`` bumped (with a cache outbox row). After the commit the
changed users' Redis sets are rewritten, and the dynamic segments whose conditions refer to
this segment are recomputed.
"""

from __future__ import annotations

import msgspec

from services.admin.segments.dependents import Dependents, data_dependents
from services.admin.segments.service import as_id, kind_phrase
from services.admin.users.refs import UserRefs, checked_refs, resolve_users
from shared.db import Conn
from shared.http import ApiError
from shared.membership import bump_versions, outbox, record_changes
from shared.membership.locking import retrying

CAUSE = "admin"


class MembersChange(msgspec.Struct, kw_only=True):
    """The answer to ``POST``/``DELETE /v1/segments/{segment}/members``.

    ``added``/``removed``: memberships that really changed (a user already in, or already out,
    counts in neither). ``created``: userIds that named nobody and were created as new
    identified users (adding only). ``unknownUserIds`` (removing only) and ``unknownEmails``:
    what matched no user."""

    added: int = 0
    removed: int = 0
    created: list[str] = []
    unknownUserIds: list[str] = []
    unknownEmails: list[str] = []


class ManualResult(msgspec.Struct, kw_only=True):
    answer: MembersChange
    #: users whose memberships changed (their Redis sets need rewriting)
    changed: list[int]
    #: whether users were created (the worker's drain should be woken)
    created: bool
    dependents: Dependents
    #: the cache outbox row standing for the changed users' Redis sets
    outbox_id: int | None = None


async def change_members(
    conn: Conn, env_id: int, ref: str, body: UserRefs, *, add: bool
) -> ManualResult:
    """Add (``add``) or remove the users ``body`` names to/from manual segment ``ref``:
    404 unknown segment, 409 not a manual segment, 422 bad body. A deadlock is retried at
    once."""
    return await retrying(
        lambda: _change_members(conn, env_id, ref, body, add=add), what="manual members"
    )


async def _change_members(
    conn: Conn, env_id: int, ref: str, body: UserRefs, *, add: bool
) -> ManualResult:
    user_ids, emails = checked_refs(body)
    outbox_id = None
    async with conn.transaction():
        # FOR SHARE: the segment cannot be deleted or renamed under us, yet concurrent member
        # changes of the same segment do not wait for each other.
        row = await conn.fetchrow(
            """SELECT id, key, kind FROM segments WHERE env_id = $1 AND (key = $2 OR id = $3)
               ORDER BY key = $2 DESC LIMIT 1 FOR SHARE""",
            env_id,
            ref,
            as_id(ref),
        )
        if row is None:
            raise ApiError(404, f"segment: no segment with key or id {ref!r}", "segment")
        if row["kind"] != "manual":
            raise ApiError(
                409,
                f"segment: {row['key']!r} is {kind_phrase(row['kind'])}; only manual segments "
                "take members by hand",
                "segment",
            )
        seg_id: int = row["id"]
        users = await resolve_users(conn, env_id, user_ids, emails, create=add)
        if add:
            rows = await conn.fetch(
                """INSERT INTO memberships (env_id, segment_id, user_pk)
                   SELECT $1, $2, u FROM unnest($3::bigint[]) AS x(u)
                   ON CONFLICT DO NOTHING RETURNING user_pk""",
                env_id,
                seg_id,
                users.pks,
            )
        else:
            rows = await conn.fetch(
                """DELETE FROM memberships
                   WHERE env_id = $1 AND segment_id = $2 AND user_pk = ANY($3::bigint[])
                   RETURNING user_pk""",
                env_id,
                seg_id,
                users.pks,
            )
        changed = sorted(r["user_pk"] for r in rows)
        dependents = Dependents()
        if changed:
            await record_changes(
                conn, env_id, [seg_id] * len(changed), changed, [add] * len(changed), CAUSE
            )
            await bump_versions(conn, env_id, changed)
            outbox_id = await outbox.record(conn, env_id, changed)
            dependents = await data_dependents(conn, env_id, segment_ids={seg_id})
    answer = MembersChange(
        added=len(changed) if add else 0,
        removed=0 if add else len(changed),
        created=users.created,
        unknownUserIds=users.unknown_user_ids,
        unknownEmails=users.unknown_emails,
    )
    return ManualResult(
        answer=answer,
        changed=changed,
        created=bool(users.created),
        dependents=dependents,
        outbox_id=outbox_id,
    )
