"""Attribute types while a batch is applied: infer the type of attributes seen for the first
time, and warn about values that don't fit their attribute's type (they are kept in the
profile, and count as missing for conditions)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shared.attribute_types import fits, infer_type, record_inferred, type_key
from shared.db import Conn
from shared.messages import Change, InboxMessage

Warning_ = tuple[str, str | None, str | None, str]  # messageId, userId, attribute, text


def _values(changes: Mapping[str, Change]) -> list[tuple[str, Any]]:
    return [(n, c.value) for n, c in changes.items() if c.op in ("set", "set_once")]


async def check_types(
    conn: Conn, env_id: int, messages: Sequence[InboxMessage], types: Mapping[str, str]
) -> list[Warning_]:
    """Record inferred types for new attributes (one statement per scope) and return a warning
    for every value that doesn't fit its attribute's type."""
    known = dict(types)
    first: dict[str, dict[str, Any]] = {"user": {}, "company": {}, "membership": {}}
    warnings: list[Warning_] = []
    for msg in messages:
        scoped = (
            [("company", msg.attributes), ("membership", msg.membership)]
            if msg.type == "group"
            else [("user", msg.attributes)]
        )
        for scope, changes in scoped:
            for name, value in _values(changes):
                key = type_key(scope, name)
                if key not in known:
                    inferred = infer_type(value)
                    if inferred is None:
                        continue
                    known[key] = inferred
                    first[scope][name] = value
                elif not fits(value, known[key]):
                    warnings.append(
                        (
                            msg.messageId,
                            msg.userId,
                            key,
                            f"{value!r} is not a {known[key]}: kept in the profile, "
                            "but conditions treat it as missing",
                        )
                    )
    for scope, values in first.items():
        if values:
            await record_inferred(conn, env_id, scope, values)  # type: ignore[arg-type]
    return warnings
