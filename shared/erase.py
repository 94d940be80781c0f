"""Erasing a user (a privacy request): everything that identifies them goes, in one transaction.

What goes, and what is kept:

- the profile (``users``) and by cascade its anonymous ids, memberships, events, tags and
  company memberships; then any row of any table with a ``user_pk`` column for it, and any row
  with a ``user_id`` column naming one of its ids (ingestion warnings): tables added later
  are covered without touching this module;
- messages about them still waiting in the inbox, and dead letters about them (otherwise the
  worker would bring the profile back, or an operator would replay it);
- webhook deliveries: pending ones that name them are dropped; sent (or given up) ones keep
  their record with the userId blanked;
- the exits are recorded before the profile goes (cause ``erase``), so change feeds and
  webhooks see the person leave each segment. The new exit deliveries carry the userId, so
  that subscribers (an LMS keeping course groups in sync) remove the person too; the worker
  blanks it once each is delivered or given up. The change log keeps its rows with the old
  primary key, which no longer resolves to anything: the history counts stay right and name
  nobody.

After the commit the caller replaces the Redis keys by short holds above ``Erased.version``
(:meth:`MembershipCache.hold`; a cache outbox row makes the worker do it if the caller
dies): a query refill that read the profile before the erase and
writes after it is turned away, and reads meanwhile go to PostgreSQL, which knows nobody.
"""

from __future__ import annotations

import msgspec

from shared.db import Conn
from shared.membership import outbox, record_changes
from shared.messages import inbox_decoder
from shared.redis_keys import anonymous

CAUSE = "erase"
#: Tables whose ``user_pk`` rows are history kept on purpose (see the module docstring).
KEPT = frozenset({"membership_changes"})


class Erased(msgspec.Struct, kw_only=True):
    """What an erase removed: the profile's ids (for the Redis keys: anonymous ids marked by
    :func:`shared.redis_keys.anonymous`) and counts."""

    user_pk: int
    ids: list[str]
    #: the profile's last membership version (the Redis holds are put above it)
    version: int
    exits: int
    inbox: int
    dead_letters: int
    #: the cache outbox row standing for the holds (cleared once they are written)
    outbox_id: int | None = None


_FIND = """
SELECT id FROM users WHERE env_id = $1 AND user_id = $2
UNION ALL
SELECT user_pk FROM identities WHERE env_id = $1 AND anonymous_id = $2
LIMIT 1
"""


def _mentions(body: bytes, user_ids: set[str], anonymous_ids: set[str]) -> bool:
    """Whether an inbox message is about the person: its userId is theirs, or its anonymous
    id (or alias ``previousId``) is one of theirs. The namespaces are separate: another
    user whose userId equals one of their anonymous ids keeps their messages. Undecodable:
    by its bytes."""
    try:
        msg = inbox_decoder.decode(body)
    except msgspec.DecodeError:
        return any(i.encode() in body for i in user_ids | anonymous_ids)
    return msg.userId in user_ids or bool({msg.anonymousId, msg.previousId} & anonymous_ids)


async def _drop_messages(
    conn: Conn, env_id: int, table: str, user_ids: set[str], anonymous_ids: set[str]
) -> int:
    """Delete rows of ``inbox`` or ``dead_letters`` whose message is about the person; the
    bytes are searched in SQL first, the candidates decoded here."""
    needles = [i.encode() for i in sorted(user_ids | anonymous_ids)]
    lock = " FOR UPDATE" if table == "inbox" else ""  # wait for a worker applying them
    rows = await conn.fetch(
        f"""SELECT id, body FROM {table}
            WHERE env_id = $1
              AND EXISTS (SELECT 1 FROM unnest($2::bytea[]) AS n(b) WHERE position(n.b IN body) > 0)
            {lock}""",
        env_id,
        needles,
    )
    doomed = [r["id"] for r in rows if _mentions(r["body"], user_ids, anonymous_ids)]
    if doomed:
        await conn.execute(
            f"DELETE FROM {table} WHERE env_id = $1 AND id = ANY($2::bigint[])", env_id, doomed
        )
    return len(doomed)


async def _tables_with(conn: Conn, column: str) -> list[str]:
    """Tables of the current schema with both ``env_id`` and ``column`` columns (a
    partitioned table stands for its partitions: a statement on it reaches every one)."""
    rows = await conn.fetch(
        """SELECT c.table_name FROM information_schema.columns c
           JOIN information_schema.tables t
             ON t.table_schema = c.table_schema AND t.table_name = c.table_name
           JOIN pg_class r ON r.oid = format('%I.%I', c.table_schema, c.table_name)::regclass
           WHERE c.table_schema = current_schema() AND c.column_name = $1
             AND t.table_type = 'BASE TABLE' AND NOT r.relispartition
             AND EXISTS (SELECT 1 FROM information_schema.columns e
                         WHERE e.table_schema = c.table_schema AND e.table_name = c.table_name
                           AND e.column_name = 'env_id')
           ORDER BY 1""",
        column,
    )
    return [r["table_name"] for r in rows]


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def erase_user(conn: Conn, env_id: int, ident: str) -> Erased | None:
    """Erase the user whose userId or anonymous id is ``ident``; None when there is none.
    Runs its own transaction."""
    async with conn.transaction():
        pk = await conn.fetchval(_FIND, env_id, ident)
        if pk is None:
            return None
        user_ids: set[str] = set()
        row = await conn.fetchrow(
            "SELECT user_id FROM users WHERE env_id = $1 AND id = $2", env_id, pk
        )
        if row is not None and row["user_id"] is not None:
            user_ids.add(row["user_id"])
        anonymous_ids = {
            r["anonymous_id"]
            for r in await conn.fetch(
                "SELECT anonymous_id FROM identities WHERE env_id = $1 AND user_pk = $2",
                env_id,
                pk,
            )
        }
        ids = user_ids | anonymous_ids
        # inbox rows before the user row: the order the worker locks in
        inbox = await _drop_messages(conn, env_id, "inbox", user_ids, anonymous_ids)
        dead = await _drop_messages(conn, env_id, "dead_letters", user_ids, anonymous_ids)
        version = await conn.fetchval(
            "SELECT membership_version FROM users WHERE env_id = $1 AND id = $2 FOR UPDATE",
            env_id,
            pk,
        )
        if version is None:  # merged into another profile meanwhile: erase that one
            return await erase_user(conn, env_id, ident)
        id_list = sorted(ids)
        # deliveries name users by userId only (an anonymous id may be another's userId)
        await conn.execute(
            """DELETE FROM webhook_deliveries
               WHERE env_id = $1 AND status = 'pending' AND payload ->> 'userId' = ANY($2)""",
            env_id,
            sorted(user_ids),
        )
        await conn.execute(
            """UPDATE webhook_deliveries SET payload = jsonb_set(payload, '{userId}', 'null')
               WHERE env_id = $1 AND payload ->> 'userId' = ANY($2)""",
            env_id,
            sorted(user_ids),
        )
        segments = [
            r["segment_id"]
            for r in await conn.fetch(
                "SELECT segment_id FROM memberships WHERE env_id = $1 AND user_pk = $2",
                env_id,
                pk,
            )
        ]
        await record_changes(
            conn, env_id, segments, [pk] * len(segments), [False] * len(segments), CAUSE
        )
        await conn.execute("DELETE FROM users WHERE env_id = $1 AND id = $2", env_id, pk)
        for table in await _tables_with(conn, "user_pk"):
            if table not in KEPT:
                await conn.execute(
                    f"DELETE FROM {_ident(table)} WHERE env_id = $1 AND user_pk = $2", env_id, pk
                )
        for table in await _tables_with(conn, "user_id"):
            if table == "users":  # another profile's userId may equal an anonymous id
                continue
            await conn.execute(
                f"DELETE FROM {_ident(table)} WHERE env_id = $1 AND user_id = ANY($2)",
                env_id,
                id_list,
            )
        keys = sorted(user_ids) + [anonymous(a) for a in sorted(anonymous_ids)]
        outbox_id = await outbox.record(
            conn, env_id, [], erased_keys=keys, hold_version=version + 1
        )
    return Erased(
        user_pk=pk,
        ids=keys,
        version=version,
        exits=len(segments),
        inbox=inbox,
        dead_letters=dead,
        outbox_id=outbox_id,
    )
