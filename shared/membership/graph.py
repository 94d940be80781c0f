"""The graph of segment references (a condition's ``{"segment": ...}`` leaves), one for every
use: the worker's evaluation order, the recomputes of the segments built on one, and the
admin's checks (unknown references, cycles, depth) when a definition is saved."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import asyncpg

from shared.db import Conn

log = logging.getLogger(__name__)

GROUPS = ("all", "any", "none")
MAX_REFERENCE_DEPTH = 10


class GraphError(ValueError):
    """A reference to no segment, a cycle, or references nested too deep (``path``: the JSON
    path of the offending node)."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


def segment_refs(node: Any, path: str = "$") -> Iterator[tuple[str, str]]:
    """(JSON path, key or id as a string) of every segment leaf under ``node``."""
    if not isinstance(node, Mapping):
        return
    if "segment" in node and not isinstance(node["segment"], Mapping | list):
        yield f"{path}.segment", str(node["segment"])
        return
    for group in GROUPS:
        children = node.get(group)
        if isinstance(children, list):
            for i, child in enumerate(children):
                yield from segment_refs(child, f"{path}.{group}[{i}]")


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


async def load_graph(conn: Conn, env_id: int) -> SegmentGraph:
    """The environment's segments and their references, as stored."""
    rows = await conn.fetch("SELECT id, key, conditions FROM segments WHERE env_id = $1", env_id)
    return SegmentGraph(
        {r["key"]: r["id"] for r in rows},
        {r["id"]: r["conditions"] for r in rows if r["conditions"] is not None},
    )


async def load_refs(conn: Conn, env_id: int) -> dict[int, set[int]]:
    """{segment id with conditions: ids of the segments they refer to}."""
    return (await load_graph(conn, env_id)).edges


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


class SegmentGraph:
    """An environment's segments (key → id) and their references (id → referenced ids)."""

    def __init__(self, keys: Mapping[str, int], conditions: Mapping[int, Any]) -> None:
        self.keys = dict(keys)
        self.ids = set(self.keys.values())
        self.names = {v: k for k, v in self.keys.items()}
        self.conditions = dict(conditions)
        self.edges: dict[int, set[int]] = {}
        for seg_id, cond in conditions.items():
            self.edges[seg_id] = {
                found for _, ref in segment_refs(cond) if (found := self.resolve(ref)) is not None
            }

    def resolve(self, ref: str) -> int | None:
        """The id of the segment with key ``ref``, else with id ``ref``."""
        found = self.keys.get(ref)
        if found is None and ref.isascii() and ref.isdigit() and int(ref) in self.ids:
            found = int(ref)
        return found

    def check(self, seg_id: int, seg_key: str, conditions: Any) -> None:
        """Raise GraphError when ``conditions`` (the new conditions of segment ``seg_id``) name a
        segment that does not exist, or close a cycle of references, or nest too deep."""
        self.keys[seg_key] = seg_id
        self.ids.add(seg_id)
        self.names[seg_id] = seg_key
        targets: set[int] = set()
        for path, ref in segment_refs(conditions):
            found = self.resolve(ref)
            if found is None:
                raise GraphError(f"{path}: no segment with key or id {ref!r}", path)
            targets.add(found)
        self.edges[seg_id] = targets
        depth = self._depth(seg_id, seg_id, [seg_id], {})
        if depth > MAX_REFERENCE_DEPTH:
            raise GraphError(
                f"conditions: segment references nest {depth} deep (at most {MAX_REFERENCE_DEPTH})",
                "conditions",
            )

    def _depth(self, node: int, start: int, trail: list[int], memo: dict[int, int]) -> int:
        """The longest chain of references from ``node``; raises 422 on a cycle back to
        ``start`` (the rest of the graph was acyclic when saved, so memoising is sound)."""
        if node in memo:
            return memo[node]
        best = 0
        for target in self.edges.get(node, ()):
            if target == start:
                chain = " → ".join(self.names.get(i, str(i)) for i in [*trail, target])
                raise GraphError(
                    f"conditions: segment references form a cycle: {chain}", "conditions"
                )
            if target not in trail:
                best = max(best, 1 + self._depth(target, start, [*trail, target], memo))
        memo[node] = best
        return best

    def in_order(self, seg_ids: set[int]) -> list[int]:
        """``seg_ids`` ordered so that each comes after those of them it refers to."""
        return dependency_order({s: self.edges.get(s, set()) & seg_ids for s in seg_ids})

    def referrers(self, seg_id: int) -> list[str]:
        """Keys of the segments whose conditions refer to ``seg_id``."""
        return sorted(self.names[s] for s, targets in self.edges.items() if seg_id in targets)
