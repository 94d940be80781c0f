"""The profile merge rules: how one message's attribute changes apply to a profile.

Pure functions over in-memory attribute maps, so that the worker can apply a whole batch in
Python and write the result with set-based SQL. The rules (see the API spec):

- ``set`` / ``set_once`` / ``unset`` are ordered per attribute by message timestamp: each
  attribute remembers the timestamp of the message that last wrote (or unset) it, and an older
  message never overwrites it (equal timestamps: the later-applied message wins).
- ``add`` / ``subtract`` / ``append`` / ``prepend`` / ``remove`` commute, so they always apply
  (exactly once per messageId: the worker deduplicates), whatever their timestamp.
- ``first_seen_at`` / ``last_seen_at`` are the system's own: incoming values are ignored with a
  warning.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from shared.messages import SYSTEM_ATTRIBUTES, Change

Warning_ = tuple[str, str]  # (attribute, message)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def apply_changes(
    attributes: dict[str, Any],
    timestamps: dict[str, int],
    changes: Mapping[str, Change],
    at: int,
) -> list[Warning_]:
    """Apply ``changes`` made at ``at`` (epoch ms) to ``attributes`` in place, keeping
    ``timestamps`` (attribute -> epoch ms of its last ordered write). Returns warnings for
    changes that could not apply; the rest of the message still applies."""
    warnings: list[Warning_] = []
    for name, change in changes.items():
        if name in SYSTEM_ATTRIBUTES:
            warnings.append((name, f"{name} is kept by the system; the value sent was ignored"))
            continue
        op = change.op
        if op in ("set", "set_once", "unset"):
            last = timestamps.get(name)
            if last is not None and at < last:
                continue  # a newer write already happened: a late message never rolls back
            if op == "set":
                attributes[name] = change.value
            elif op == "unset":
                attributes.pop(name, None)
            elif attributes.get(name) is None:  # set_once writes only when there is no value
                attributes[name] = change.value
            else:
                continue
            timestamps[name] = at
        elif op in ("add", "subtract"):
            current = attributes.get(name)
            if current is None:
                current = 0
            if not _is_number(current):
                warnings.append((name, f'"{op}" needs a number but the value is {current!r}'))
                continue
            delta = change.value if op == "add" else -change.value
            attributes[name] = current + delta
        else:  # append / prepend / remove: a list of distinct strings
            current = attributes.get(name)
            if current is None:
                current = []
            if not isinstance(current, list):
                warnings.append((name, f'"{op}" needs a list but the value is {current!r}'))
                continue
            values: list[str] = change.value
            if op == "remove":
                attributes[name] = [v for v in current if v not in values]
            else:
                fresh = [v for v in dict.fromkeys(values) if v not in current]
                attributes[name] = [*current, *fresh] if op == "append" else [*fresh, *current]
    return warnings


def merge_attributes(
    into: dict[str, Any],
    into_ts: dict[str, int],
    source: Mapping[str, Any],
    source_ts: Mapping[str, int],
) -> None:
    """Merge an anonymous profile's attributes into the identified one: on a conflict the
    identified profile's value wins; attributes it lacks are taken with their timestamps."""
    for name, value in source.items():
        if into.get(name) is None:
            into[name] = value
            if name in source_ts:
                into_ts[name] = max(into_ts.get(name, 0), source_ts[name])


def apply_segment_ops(
    current: set[str], ops: Iterable[str], manual_keys: Iterable[str]
) -> set[str]:
    """The manual segment keys a user belongs to after ``ops`` (in order): ``key`` adds,
    ``~key`` removes, ``~`` or ``~*`` removes every manual segment. Unknown keys are ignored
    by the caller (``manual_keys`` is the environment's set of manual segment keys)."""
    known = set(manual_keys)
    result = set(current)
    for op in ops:
        if op in ("~", "~*"):
            result.clear()
        elif op.startswith("~"):
            result.discard(op[1:])
        elif op in known:
            result.add(op)
    return result
