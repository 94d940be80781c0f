"""Member counts kept by migration 085 (shared.member_counts) equal count(*) of memberships and
user_tags whatever writes, deletes and folds interleave, concurrent ones included; and the
last-seen day index keeps identifies HOT."""

from __future__ import annotations

import asyncio
import random
import secrets

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.admin.segments.service import list_segments
from services.admin.tags.service import list_tags
from shared import member_counts
from shared.db import Conn
from shared.environments import EnvironmentKeys


async def _users(db: asyncpg.Pool, env_id: int, n: int) -> list[int]:
    rows = await db.fetch(
        """INSERT INTO users (env_id, user_id, attributes, first_seen_at, last_seen_at)
           SELECT $1, $3 || g, jsonb_build_object('email', 'U' || g || '@Example.com'),
                  now(), now()
           FROM generate_series(1, $2) AS g ORDER BY g RETURNING id""",
        env_id,
        n,
        f"mc-{secrets.token_hex(4)}-",
    )
    return [r["id"] for r in rows]


async def _segment(db: asyncpg.Pool, env_id: int, key: str) -> int:
    seg_id: int = await db.fetchval(
        """INSERT INTO segments (env_id, key, name, kind) VALUES ($1, $2, $2, 'manual')
           RETURNING id""",
        env_id,
        key,
    )
    return seg_id


async def _tag(db: asyncpg.Pool, env_id: int, value: str) -> int:
    tag_id: int = await db.fetchval(
        "INSERT INTO tags (env_id, key, value) VALUES ($1, 'k', $2) RETURNING id", env_id, value
    )
    return tag_id


async def _exact(db: asyncpg.Pool, env_id: int, seg_id: int, tag_id: int) -> tuple[int, int]:
    members = await db.fetchval(
        "SELECT count(*) FROM memberships WHERE env_id = $1 AND segment_id = $2", env_id, seg_id
    )
    users = await db.fetchval(
        "SELECT count(*) FROM user_tags WHERE env_id = $1 AND tag_id = $2", env_id, tag_id
    )
    return members, users


async def _kept(db: asyncpg.Pool, env_id: int, seg_id: int, tag_id: int) -> tuple[int, int]:
    return (
        await member_counts.member_count(db, env_id, "s", seg_id),
        await member_counts.member_count(db, env_id, "t", tag_id),
    )


async def _write(
    db: asyncpg.Pool | Conn, env_id: int, seg_id: int, tag_id: int, add: bool, pks: list[int]
) -> None:
    """One statement per table, as the worker and the admin write (ON CONFLICT included)."""
    if add:
        await db.execute(
            """INSERT INTO memberships (env_id, segment_id, user_pk)
               SELECT $1, $2, unnest($3::bigint[]) ON CONFLICT DO NOTHING""",
            env_id,
            seg_id,
            pks,
        )
        await db.execute(
            """INSERT INTO user_tags (env_id, user_pk, tag_id)
               SELECT $1, unnest($3::bigint[]), $2 ON CONFLICT DO NOTHING""",
            env_id,
            tag_id,
            pks,
        )
    else:
        await db.execute(
            "DELETE FROM memberships WHERE env_id = $1 AND segment_id = $2 AND user_pk = ANY($3)",
            env_id,
            seg_id,
            pks,
        )
        await db.execute(
            "DELETE FROM user_tags WHERE env_id = $1 AND tag_id = $2 AND user_pk = ANY($3)",
            env_id,
            tag_id,
            pks,
        )


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["add", "remove", "fold"]), st.sets(st.integers(0, 19))),
        max_size=12,
    )
)
async def test_counts_equal_count_star_through_writes_and_folds(
    db: asyncpg.Pool, env: EnvironmentKeys, steps: list[tuple[str, set[int]]]
) -> None:
    key = f"p{secrets.token_hex(4)}"
    pks = await _users(db, env.id, 20)
    seg_id, tag_id = await _segment(db, env.id, key), await _tag(db, env.id, key)
    for op, chosen in steps:
        if op == "fold":
            await member_counts.fold(db)
        else:
            await _write(db, env.id, seg_id, tag_id, op == "add", [pks[i] for i in chosen])
        assert await _kept(db, env.id, seg_id, tag_id) == await _exact(db, env.id, seg_id, tag_id)


async def test_lists_show_the_kept_counts(db: asyncpg.Pool, env: EnvironmentKeys) -> None:
    pks = await _users(db, env.id, 30)
    seg_id, tag_id = await _segment(db, env.id, "listed"), await _tag(db, env.id, "listed")
    await _write(db, env.id, seg_id, tag_id, True, pks[:25])
    await _write(db, env.id, seg_id, tag_id, False, pks[20:])
    await member_counts.fold(db)
    await _write(db, env.id, seg_id, tag_id, True, pks[:3])  # already there: counts nothing
    async with db.acquire() as conn:
        segments = {s.key: s.memberCount for s in await list_segments(conn, env.id)}
        tags = {t.value: t.userCount for t in await list_tags(conn, env.id, None)}
    assert segments["listed"] == 20
    assert tags["listed"] == 20


async def test_concurrent_writers_and_folds_keep_exact_counts(
    db: asyncpg.Pool, env: EnvironmentKeys
) -> None:
    pks = await _users(db, env.id, 200)
    seg_id, tag_id = await _segment(db, env.id, "busy"), await _tag(db, env.id, "busy")
    rng = random.Random(5)

    async def writer(seed: int) -> None:
        mine = random.Random(seed)
        for _ in range(25):
            chosen = mine.sample(pks, mine.randrange(1, 30))
            async with db.acquire() as conn, conn.transaction():
                await _write(conn, env.id, seg_id, tag_id, mine.random() < 0.6, sorted(chosen))

    async def folder() -> None:
        for _ in range(15):
            await member_counts.fold(db)
            await asyncio.sleep(rng.random() / 100)

    await asyncio.gather(*(writer(s) for s in range(4)), folder(), folder())
    await member_counts.fold(db)
    assert await _kept(db, env.id, seg_id, tag_id) == await _exact(db, env.id, seg_id, tag_id)
    rows = await db.fetchval(
        "SELECT count(*) FROM member_counts WHERE env_id = $1 AND id = ANY($2)",
        env.id,
        [seg_id, tag_id],
    )
    assert rows <= 2  # folded: one row each (none for an empty one)


async def test_a_deleted_segment_or_tag_leaves_no_rows_after_a_fold(
    db: asyncpg.Pool, env: EnvironmentKeys
) -> None:
    pks = await _users(db, env.id, 5)
    seg_id, tag_id = await _segment(db, env.id, "gone"), await _tag(db, env.id, "gone")
    await _write(db, env.id, seg_id, tag_id, True, pks)
    await member_counts.fold(db)
    await db.execute("DELETE FROM segments WHERE env_id = $1 AND id = $2", env.id, seg_id)
    await db.execute("DELETE FROM tags WHERE env_id = $1 AND id = $2", env.id, tag_id)
    await member_counts.fold(db)
    left = await db.fetchval(
        """SELECT count(*) FROM member_counts
           WHERE env_id = $1 AND ((of = 's' AND id = $2) OR (of = 't' AND id = $3))""",
        env.id,
        seg_id,
        tag_id,
    )
    assert left == 0


async def test_an_identify_on_the_same_day_stays_a_hot_update(
    db: asyncpg.Pool, env: EnvironmentKeys
) -> None:
    """The last-seen day index must not cost identifies their HOT updates (migration 085)."""
    [pk] = await _users(db, env.id, 1)
    async with db.acquire() as conn, conn.transaction():
        await conn.execute(
            """UPDATE users SET attributes = attributes || '{"plan": "pro"}',
                                last_seen_at = last_seen_at + interval '1 second'
               WHERE env_id = $1 AND id = $2""",
            env.id,
            pk,
        )
        hot = await conn.fetchval(
            "SELECT n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relname = 'users'"
        )
    assert hot == 1
