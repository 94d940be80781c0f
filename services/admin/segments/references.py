"""Segment leaves (``{"segment": key_or_id}``) inside condition JSON: finding them, checking
that they name existing segments, and that the graph of references stays acyclic."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from shared.http import ApiError

GROUPS = ("all", "any", "none")
MAX_REFERENCE_DEPTH = 10


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


def tag_refs(node: Any) -> Iterator[tuple[str, str | None]]:
    """(key, value or None for "any value") of every tag leaf under ``node``."""
    if not isinstance(node, Mapping):
        return
    tag = node.get("tag")
    if isinstance(tag, Mapping) and isinstance(tag.get("key"), str):
        value = tag.get("value")
        yield tag["key"], value if isinstance(value, str) else None
        return
    for group in GROUPS:
        children = node.get(group)
        if isinstance(children, list):
            for child in children:
                yield from tag_refs(child)


def rename_tag(node: Any, old: tuple[str, str], new: tuple[str, str]) -> Any:
    """``node`` with every tag leaf naming exactly the tag ``old`` (key and value) renamed to
    ``new``; leaves naming a key alone are left as they are."""
    if not isinstance(node, Mapping):
        return node
    tag = node.get("tag")
    if isinstance(tag, Mapping):
        if (tag.get("key"), tag.get("value")) == old:
            return {**node, "tag": {**tag, "key": new[0], "value": new[1]}}
        return node
    out = dict(node)
    for group in GROUPS:
        children = node.get(group)
        if isinstance(children, list):
            out[group] = [rename_tag(child, old, new) for child in children]
    return out


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
        """Raise 422 when ``conditions`` (the new conditions of segment ``seg_id``) name a
        segment that does not exist, or close a cycle of references, or nest too deep."""
        self.keys[seg_key] = seg_id
        self.ids.add(seg_id)
        self.names[seg_id] = seg_key
        targets: set[int] = set()
        for path, ref in segment_refs(conditions):
            found = self.resolve(ref)
            if found is None:
                raise ApiError(422, f"{path}: no segment with key or id {ref!r}", path)
            targets.add(found)
        self.edges[seg_id] = targets
        depth = self._depth(seg_id, seg_id, [seg_id], {})
        if depth > MAX_REFERENCE_DEPTH:
            raise ApiError(
                422,
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
                raise ApiError(
                    422, f"conditions: segment references form a cycle: {chain}", "conditions"
                )
            if target not in trail:
                best = max(best, 1 + self._depth(target, start, [*trail, target], memo))
        memo[node] = best
        return best

    def in_order(self, seg_ids: set[int]) -> list[int]:
        """``seg_ids`` ordered so that each comes after those of them it refers to."""
        order: list[int] = []
        placed: set[int] = set()

        def place(node: int) -> None:
            if node in placed:
                return
            placed.add(node)
            for target in sorted(self.edges.get(node, ())):
                if target in seg_ids:
                    place(target)
            order.append(node)

        for node in sorted(seg_ids):
            place(node)
        return order

    def referrers(self, seg_id: int) -> list[str]:
        """Keys of the segments whose conditions refer to ``seg_id``."""
        return sorted(self.names[s] for s, targets in self.edges.items() if seg_id in targets)
