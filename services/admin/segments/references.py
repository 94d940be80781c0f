"""Tag leaves inside condition JSON: finding and renaming them. (Segment leaves and the graph
of references between segments are :mod:`shared.membership.graph`'s.)"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from shared.membership.graph import GROUPS


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
