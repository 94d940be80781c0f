"""The condition tree as typed values: groups, leaves, the evaluation subject and the error.

The JSON shape (see ``conditions.md``) is decoded by :func:`shared.conditions.parse_condition`
into these Structs; both engines compile from them, never from raw JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal, TypeAlias

import msgspec

# The attribute types of the spec; ``None`` on a leaf means "untyped" (only ``is_set`` /
# ``is_not_set`` without a declared type: any usable JSON value counts as set).
AttrType: TypeAlias = Literal["string", "number", "boolean", "datetime", "list"]
ATTR_TYPES: frozenset[str] = frozenset({"string", "number", "boolean", "datetime", "list"})

# Attribute names that read columns of the users table instead of ``attributes``.
COLUMN_ATTRIBUTES: frozenset[str] = frozenset({"first_seen_at", "last_seen_at"})


class ConditionError(ValueError):
    """An invalid (or not yet evaluable) condition; ``path`` is a JSON path to the node."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class AllOf(msgspec.Struct, frozen=True):
    """``{"all": [...]}``: every child holds (true when empty)."""

    children: tuple[Condition, ...]


class AnyOf(msgspec.Struct, frozen=True):
    """``{"any": [...]}``: at least one child holds (false when empty)."""

    children: tuple[Condition, ...]


class NoneOf(msgspec.Struct, frozen=True):
    """``{"none": [...]}``: no child holds (true when empty)."""

    children: tuple[Condition, ...]


class Attribute(msgspec.Struct, frozen=True):
    """An attribute leaf. ``value`` is the JSON value as written (UNSET when absent);
    ``type`` is the attribute type the leaf compares as, resolved when parsing (declared
    type if one was given, else inferred from the operator and value)."""

    attribute: str
    op: str
    value: Any = msgspec.UNSET
    scope: Literal["user", "company"] = "user"
    ci: bool = False
    type: AttrType | None = None


class Tag(msgspec.Struct, frozen=True):
    """``{"tag": {"key": ..., "value": ...}}``: the user has that tag (any value if None)."""

    key: str
    value: str | None = None


class SegmentRef(msgspec.Struct, frozen=True):
    """``{"segment": key_or_id}``: the user is a member of that segment."""

    segment: str | int


class Event(msgspec.Struct, frozen=True):
    """``{"event": name, "op": ..., "value": ..., "withinDays": ...}``: count comparison."""

    event: str
    op: str
    value: int | tuple[int, int]
    within_days: int | None = None


class Bucket(msgspec.Struct, frozen=True):
    """``{"bucket": {"seed", "from", "to"}}``: ``from <= md5-bucket(user_id) < to``."""

    seed: str
    lo: int
    hi: int


Condition: TypeAlias = AllOf | AnyOf | NoneOf | Attribute | Tag | SegmentRef | Event | Bucket
Group: TypeAlias = AllOf | AnyOf | NoneOf


class Subject(msgspec.Struct):
    """One user as the Python engine sees it: the row of ``users`` with decoded attributes,
    and what the other leaves read (each with an empty default, so older constructors work):

    - ``tags``: the user's tags as (key, value) pairs;
    - ``companies``: the attributes of each company the user belongs to;
    - ``segments``: ids of the segments the user is a member of (for segment leaves; the
      caller fills it in dependency order);
    - ``events``: event name -> {UTC epoch day number: count} (only the names the conditions
      use need to be there; see :func:`shared.conditions.referenced_events`)."""

    user_pk: int
    user_id: str | None
    attributes: dict[str, Any]
    first_seen_at: datetime
    last_seen_at: datetime
    tags: frozenset[tuple[str, str]] = frozenset()
    companies: tuple[dict[str, Any], ...] = ()
    segments: frozenset[int] = frozenset()
    events: Mapping[str, Mapping[int, int]] = msgspec.field(default_factory=dict)
