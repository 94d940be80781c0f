"""The graph of segment references (a condition's ``{"segment": ...}`` leaves): evaluation
order and the segments built on one."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import asyncpg

from shared.conditions import ConditionError, parse_condition, referenced_segments
from shared.db import Conn

log = logging.getLogger(__name__)


def name_map(rows: Iterable[asyncpg.Record] | Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Segment key and id (as a string) -> id, from rows with ``id`` and ``key``: how segment
    leaves name segments. A key wins over an id spelled the same (keys are never all
    digits, so this only matters for hand-made data)."""
    out = {str(r["id"]): int(r["id"]) for r in rows}
    out.update({r["key"]: int(r["id"]) for r in rows})
    return out


async def segment_names(conn: Conn, env_id: int) -> dict[str, int]:
    """:func:`name_map` of every segment of the environment."""
    return name_map(await conn.fetch("SELECT id, key FROM segments WHERE env_id = $1", env_id))


def dependency_order(refs: Mapping[int, set[int]]) -> list[int]:
    """Segment ids so that each comes after the ones it refers to (``refs``: id -> ids).
    References outside ``refs`` are already known; a cycle (validation forbids them) is
    broken arbitrarily, with a log line."""
    order: list[int] = []
    state: dict[int, int] = {}  # 1 visiting, 2 done

    def visit(node: int) -> None:
        stack = [(node, iter(sorted(refs.get(node, ()))))]
        state[node] = 1
        while stack:
            current, children = stack[-1]
            for child in children:
                if child not in refs or state.get(child) == 2:
                    continue
                if state.get(child) == 1:
                    log.warning("cycle between segments at %s; evaluating in any order", child)
                    continue
                state[child] = 1
                stack.append((child, iter(sorted(refs.get(child, ())))))
                break
            else:
                stack.pop()
                state[current] = 2
                order.append(current)

    for node in sorted(refs):
        if node not in state:
            visit(node)
    return order


async def load_refs(conn: Conn, env_id: int) -> dict[int, set[int]]:
    """{dynamic segment id: ids of the segments its conditions refer to} (conditions that no
    longer parse refer to nothing)."""
    rows = await conn.fetch(
        """SELECT id, conditions FROM segments
           WHERE env_id = $1 AND kind = 'dynamic' AND conditions IS NOT NULL""",
        env_id,
    )
    names = await segment_names(conn, env_id)
    refs: dict[int, set[int]] = {}
    for row in rows:
        try:
            cond = parse_condition(row["conditions"])
        except ConditionError:
            refs[row["id"]] = set()
            continue
        refs[row["id"]] = {names[r] for r in referenced_segments(cond) if r in names}
    return refs


def reaching(refs: Mapping[int, set[int]], segment_ids: set[int]) -> set[int]:
    """The segments that refer, directly or through others, to one of ``segment_ids``."""
    reached = set(segment_ids)
    changed = True
    while changed:
        changed = False
        for seg, targets in refs.items():
            if seg not in reached and targets & reached:
                reached.add(seg)
                changed = True
    return reached - set(segment_ids)


async def dependents_of(conn: Conn, env_id: int, segment_id: int) -> list[int]:
    """Dynamic segments whose conditions refer (directly or through others) to
    ``segment_id``, in dependency order: what to recompute after it changed."""
    refs = await load_refs(conn, env_id)
    reached = reaching(refs, {segment_id})
    return [s for s in dependency_order(refs) if s in reached]
