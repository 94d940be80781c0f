"""What each column of an import means: the mapping suggested for a draft and checked when the
import starts, shared by the admin service (which checks it) and the worker (which applies it).

A mapping is ``{"<column>": {"as": <role>, "name"?: <attribute or tag key>}}``. Roles by kind:

- ``users``: ``userId`` / ``email`` identify the row (at least one of them), ``attribute``
  (``name`` defaults to the column), ``tag`` (the tag ``<name or column>: <cell>``),
  ``segment`` (the cell holds manual segment keys, comma-separated), ``ignore``;
- ``members``: ``userId`` / ``email``, ``segment`` (segment keys; else ``?segment=``), ``ignore``;
- ``segments``: ``name``, ``key``, ``description``, ``kind``, ``conditions`` (JSON), ``ignore``.

Columns the mapping does not name are ignored.
"""

from __future__ import annotations

import re
from typing import Literal

import msgspec

from shared.messages import MAX_ATTRIBUTE_NAME, SYSTEM_ATTRIBUTES

ImportKind = Literal["users", "members", "segments"]
KINDS: tuple[str, ...] = ("users", "members", "segments")

ROLES: dict[str, tuple[str, ...]] = {
    "users": ("userId", "email", "attribute", "tag", "segment", "ignore"),
    "members": ("userId", "email", "segment", "ignore"),
    "segments": ("name", "key", "description", "kind", "conditions", "ignore"),
}
#: Roles a mapping may give to one column at most.
_SINGLE = frozenset(("userId", "email", "name", "key", "description", "kind", "conditions"))
MAX_TAG_PART = 255


class ColumnMapping(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """What one column is: ``as`` a role, with the attribute or tag ``name`` where it has one."""

    as_: str = msgspec.field(name="as")
    name: str | None = None


Mapping = dict[str, ColumnMapping]


class MappingError(ValueError):
    """A mapping that cannot be used; ``field`` names the offending column."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = f"{field}: {message}"


def _norm(header: str) -> str:
    return re.sub(r"[^a-z0-9]", "", header.lower())


_USER_ID = frozenset(("userid", "id", "uid", "externalid", "externaluserid", "user"))
_EMAIL = frozenset(("email", "emailaddress", "mail", "useremail"))
_SEGMENT = frozenset(
    ("segment", "segments", "segmentkey", "segmentkeys", "segmentid", "usersegmentid")
)
_SEGMENT_FIELDS = {
    "name": "name",
    "segmentname": "name",
    "usersegmentname": "name",
    "key": "key",
    "segmentkey": "key",
    "segmentid": "key",
    "usersegmentid": "key",
    "id": "key",
    "description": "description",
    "kind": "kind",
    "type": "kind",
    "conditions": "conditions",
}


def suggest_mapping(kind: str, columns: list[str]) -> Mapping:
    """The mapping a draft proposes, from the column headers alone."""
    out: Mapping = {}
    taken: set[str] = set()

    def give(column: str, role: str, name: str | None = None) -> None:
        if role in _SINGLE and role in taken:
            role, name = ("attribute", column) if kind == "users" else ("ignore", None)
        taken.add(role)
        out[column] = ColumnMapping(as_=role, name=name)

    for column in columns:
        key = _norm(column)
        if kind == "segments":
            give(column, _SEGMENT_FIELDS.get(key, "ignore"))
        elif key in _USER_ID:
            give(column, "userId")
        elif key in _EMAIL:
            give(column, "email")
        elif key in _SEGMENT:
            give(column, "segment")
        elif kind == "users":
            give(column, "attribute", column)
        else:
            give(column, "ignore")
    return out


def check_mapping(kind: str, columns: list[str], mapping: Mapping, segment: str | None) -> Mapping:
    """``mapping`` completed for every column (unnamed ones ignored) and checked; raises
    :class:`MappingError` naming the column at fault."""
    for column in mapping:
        if column not in columns:
            raise MappingError(f"mapping.{column}", "the file has no such column")
    full: Mapping = {}
    seen: dict[str, str] = {}
    names: dict[tuple[str, str], str] = {}
    for column in columns:
        entry = mapping.get(column, ColumnMapping(as_="ignore"))
        field = f"mapping.{column}"
        if entry.as_ not in ROLES[kind]:
            raise MappingError(
                f"{field}.as", f"must be one of {', '.join(ROLES[kind])} for a {kind} import"
            )
        if entry.as_ in _SINGLE:
            if entry.as_ in seen:
                raise MappingError(
                    f"{field}.as", f"column {seen[entry.as_]!r} is already the {entry.as_}"
                )
            seen[entry.as_] = column
        name = None
        if entry.as_ in ("attribute", "tag"):
            name = (entry.name if entry.name is not None else column).strip()
            limit = MAX_ATTRIBUTE_NAME if entry.as_ == "attribute" else MAX_TAG_PART
            if not 1 <= len(name) <= limit:
                raise MappingError(f"{field}.name", f"must be 1-{limit} characters")
            if entry.as_ == "attribute" and name in SYSTEM_ATTRIBUTES:
                raise MappingError(f"{field}.name", f"{name} is kept by the system")
            if (entry.as_, name) in names:
                raise MappingError(
                    f"{field}.name",
                    f"column {names[(entry.as_, name)]!r} already sets the {entry.as_} {name!r}",
                )
            names[(entry.as_, name)] = column
        full[column] = ColumnMapping(as_=entry.as_, name=name)
    if kind in ("users", "members") and not ({"userId", "email"} & seen.keys()):
        raise MappingError("mapping", "map a column as userId or email to identify the rows")
    if kind == "members" and segment is None and not any(m.as_ == "segment" for m in full.values()):
        raise MappingError(
            "mapping", "map a column as segment, or create the import with ?segment=<key>"
        )
    if kind == "segments" and "name" not in seen and "key" not in seen:
        raise MappingError("mapping", "map a column as name (or key)")
    return full


mapping_decoder = msgspec.json.Decoder(Mapping)
