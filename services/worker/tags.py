"""Tags set from identify/group (``"tags": ["Department:Sales", "~Location:Dallas"]``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from services.worker.identity import Profile
from shared.db import Conn
from shared.membership.loader import stored_tags
from shared.messages import TagOp

TagSet = frozenset[tuple[str, str]]


def apply_tag_ops(current: Iterable[tuple[str, str]], ops: Iterable[TagOp]) -> TagSet:
    """A user's tags after ``ops``, in order."""
    tags = set(current)
    for op in ops:
        if op.op == "add":
            tags.add((op.key, op.value))
        elif op.op == "remove":
            tags.discard((op.key, op.value))
        elif op.op == "remove_key":
            tags = {t for t in tags if t[0] != op.key}
        else:  # clear
            tags.clear()
    return frozenset(tags)


async def apply_tags(
    conn: Conn, env_id: int, profiles: Sequence[Profile], everyone: bool
) -> dict[int, TagSet]:
    """Apply the batch's tag operations (and carry merged anonymous profiles' tags over);
    returns the tags of the profiles that changed, or of all ``profiles`` when ``everyone``
    (segments use tag conditions). Runs before merged profiles are deleted."""
    todo = [p for p in profiles if everyone or p.tag_ops or p.merged_from]
    if not todo:
        return {}
    pks = {p.pk for p in todo} | {s for p in todo for s in p.merged_from if s > 0}
    current = await stored_tags(conn, env_id, sorted(pks))
    result: dict[int, TagSet] = {}
    added: list[tuple[int, str, str]] = []
    removed: list[tuple[int, str, str]] = []
    for p in todo:
        start = set(current.get(p.pk, ()))
        for source in p.merged_from:
            start |= current.get(source, set())
        tags = apply_tag_ops(start, p.tag_ops)
        result[p.pk] = tags
        mine = current.get(p.pk, set())
        added.extend((p.pk, k, v) for k, v in tags - mine)
        removed.extend((p.pk, k, v) for k, v in mine - tags)
    if added:
        pairs = sorted({(k, v) for _, k, v in added})
        await conn.execute(
            """INSERT INTO tags (env_id, key, value)
               SELECT $1, k, v FROM unnest($2::text[], $3::text[]) AS x(k, v)
               ON CONFLICT (env_id, key, value) DO NOTHING""",
            env_id,
            [k for k, _ in pairs],
            [v for _, v in pairs],
        )
        await conn.execute(
            """INSERT INTO user_tags (env_id, user_pk, tag_id)
               SELECT $1, x.u, t.id FROM unnest($2::bigint[], $3::text[], $4::text[]) AS x(u, k, v)
               JOIN tags t ON t.env_id = $1 AND t.key = x.k AND t.value = x.v
               ON CONFLICT DO NOTHING""",
            env_id,
            [a[0] for a in added],
            [a[1] for a in added],
            [a[2] for a in added],
        )
    if removed:
        await conn.execute(
            """DELETE FROM user_tags ut USING tags t, unnest($2::bigint[], $3::text[], $4::text[])
                 AS x(u, k, v)
               WHERE ut.env_id = $1 AND t.env_id = $1 AND ut.tag_id = t.id
                 AND ut.user_pk = x.u AND t.key = x.k AND t.value = x.v""",
            env_id,
            [r[0] for r in removed],
            [r[1] for r in removed],
            [r[2] for r in removed],
        )
    return result
