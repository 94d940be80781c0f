"""How many members a segment has and how many users carry a tag, without counting them.

Migration 085 makes every statement that inserts or deletes memberships or user_tags append
one ``member_counts`` row per segment ('s') or tag ('t') it touched, holding the difference.
A count is the sum of its rows: exact in any snapshot, since the rows commit with the change
they count. :func:`fold` (the worker, every ``FOLD_SECONDS``) replaces each segment's or tag's
rows by their sum, so that a count reads a handful of rows however many users there are
(``count(*)`` of the All users segment read 10M index entries at 10M users, on every segments
list). Appending never waits on another writer, unlike one counter row per segment would.
"""

from __future__ import annotations

from typing import Literal

import asyncpg

from shared.db import Conn

#: The worker folds this often: at most a few rows per batch accumulate per segment meanwhile.
FOLD_SECONDS = 30

Of = Literal["s", "t"]


def count_sql(of: Of, env: str, ident: str) -> str:
    """A scalar sub-query: the members of segment ('s') or the users of tag ('t') ``ident``
    of environment ``env`` (SQL expressions, e.g. ``s.env_id``, ``s.id``)."""
    return f"""(SELECT coalesce(sum(c.delta), 0)::bigint FROM member_counts c
               WHERE c.env_id = {env} AND c.of = '{of}' AND c.id = {ident})"""


async def member_count(conn: Conn | asyncpg.Pool, env_id: int, of: Of, ident: int) -> int:
    """The members of segment ('s') or users of tag ('t') ``ident`` now."""
    count: int = await conn.fetchval(f"SELECT {count_sql(of, '$1', '$2')}", env_id, ident)
    return count


_FOLD = """
WITH gone AS (
    DELETE FROM member_counts m
    WHERE (m.env_id, m.of, m.id) IN (
        SELECT env_id, of, id FROM member_counts GROUP BY env_id, of, id HAVING count(*) > 1)
    RETURNING m.env_id, m.of, m.id, m.delta
)
INSERT INTO member_counts (env_id, of, id, delta)
SELECT g.env_id, g.of, g.id, sum(g.delta) FROM gone g
WHERE CASE g.of
    WHEN 's' THEN EXISTS (SELECT 1 FROM segments s WHERE s.env_id = g.env_id AND s.id = g.id)
    ELSE EXISTS (SELECT 1 FROM tags t WHERE t.env_id = g.env_id AND t.id = g.id) END
GROUP BY g.env_id, g.of, g.id
HAVING sum(g.delta) <> 0
"""


async def fold(pool: asyncpg.Pool) -> int:
    """Replace the rows of each segment or tag that has several by one holding their sum;
    rows of deleted segments and tags go. Writers append meanwhile: rows this statement does
    not see stay as they are. One fold at a time (a second one returns at once); returns
    how many rows were written."""
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock(hashtext('member_counts'))"):
            return 0
        status = await conn.execute(_FOLD)
    return int(status.split()[-1])
