"""Limits on what a JSON body may hold beyond its schema, shared by every HTTP service.

Three things in valid JSON break the layers behind the decoder, so they are refused at the
door with a 4xx naming the field instead of failing later (a 5xx, or a message acknowledged and
then dead-lettered):

- nesting deeper than :data:`MAX_DEPTH` (Python recursion in the decoder, the attribute
  flattener, the msgpack encoder);
- the NUL character (PostgreSQL ``text`` and ``jsonb`` cannot store it);
- integers outside 64 bits (the inbox's msgpack encoding and PostgreSQL ``bigint`` cannot hold
  them).

:func:`json_problem` costs a few byte scans in C on the common body (a 200-byte identify:
about 1 µs): only a body that *could* hold one of them (brackets beyond the depth limit, an
escaped NUL, a run of 19 digits) is decoded again and walked to find the field.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

#: Deepest nesting of objects and arrays a request body may have (a condition tree of the
#: maximum 10 levels is about 22 deep).
MAX_DEPTH = 64
INT_MIN = -(2**63)
INT_MAX = 2**63 - 1

_NUL = b"\\u0000"
# 19 digits: the shortest integer that can fall outside 64 bits (also hits long digit strings,
# which only costs the walk)
_LONG_NUMBER = re.compile(rb"\d{19}")


def suspicious(raw: bytes) -> bool:
    """Whether ``raw`` could break a rule (cheap; no false negatives)."""
    return (
        _NUL in raw
        or raw.count(b"[") + raw.count(b"{") > MAX_DEPTH
        or _LONG_NUMBER.search(raw) is not None
    )


def json_problem(raw: bytes | str, field: str = "") -> tuple[str, str] | None:
    """``(field, message)`` for the first rule ``raw`` (valid JSON) breaks, else None.

    ``field`` prefixes the path (``"filter"``); paths read ``traits.a[2].b``.
    """
    data = raw.encode() if isinstance(raw, str) else raw
    if not suspicious(data):
        return None
    try:
        value = msgspec.json.decode(data)
    except RecursionError:
        return field or "body", f"nested deeper than {MAX_DEPTH} levels"
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None  # malformed JSON is the decoder's to report
    return value_problem(value, field)


def value_problem(value: Any, field: str = "") -> tuple[str, str] | None:
    """The first rule a decoded JSON value breaks, walked without recursion."""
    stack: list[tuple[str, Any, int]] = [(field, value, 0)]
    while stack:
        path, item, depth = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return path or "body", "the NUL character (\\u0000) is not allowed"
        elif isinstance(item, bool | float) or item is None:
            continue
        elif isinstance(item, int):
            if not INT_MIN <= item <= INT_MAX:
                return path or "body", "integers must fit in 64 bits"
        elif isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                return path or "body", f"nested deeper than {MAX_DEPTH} levels"
            if isinstance(item, dict):
                for key, child in reversed(item.items()):
                    name = key.replace("\x00", "\\u0000")
                    child_path = f"{path}.{name}" if path else name
                    if name != key:
                        return child_path, "the NUL character (\\u0000) is not allowed in a name"
                    stack.append((child_path, child, depth + 1))
            else:
                for i in range(len(item) - 1, -1, -1):
                    stack.append((f"{path}[{i}]", item[i], depth + 1))
    return None
