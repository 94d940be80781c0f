"""An import's rows of segments (``name``, ``key``, ``description``, optionally ``kind`` and
``conditions`` as JSON): each row creates the segment, updates the one with its key, or finds
it already as the row says (``unchanged``), through the admin API's own segment service, so
the same checks apply (a bad condition, a cycle, a key taken: the row is rejected with that
message). Each row has a savepoint of its own."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from services.admin.segments import service
from services.admin.segments.schemas import SegmentCreate, SegmentUpdate
from shared.csv_cells import unescape_cell
from shared.db import Conn
from shared.http import ApiError
from shared.import_mapping import ColumnMapping


@dataclass
class SegmentRows:
    """What a batch of segment rows did."""

    outcomes: list[str] = field(default_factory=list)
    #: (row number, error) of the rejected rows
    rejects: list[tuple[int, str]] = field(default_factory=list)
    #: (segment id, version) of dynamic segments to recompute after the commit
    recompute: list[tuple[int, int]] = field(default_factory=list)


def _fields(
    columns: list[str], mapping: Mapping[str, ColumnMapping], cells: list[str]
) -> dict[str, str]:
    out = {}
    for i, column in enumerate(columns):
        role = mapping[column].as_
        if role != "ignore" and i < len(cells) and cells[i]:
            out[role] = unescape_cell(cells[i])
    return out


async def _row(conn: Conn, env_id: int, fields: dict[str, str], result: SegmentRows) -> str:
    conditions: Any = None
    if "conditions" in fields:
        try:
            conditions = msgspec.json.decode(fields["conditions"])
        except msgspec.DecodeError as exc:
            raise ApiError(422, f"conditions: not valid JSON: {exc}", "conditions") from exc
    kind = fields.get("kind", "dynamic" if conditions is not None else "manual").lower()
    if kind not in ("dynamic", "manual"):
        raise ApiError(422, "kind: must be dynamic or manual", "kind")
    name = fields.get("name") or fields.get("key") or ""
    key = fields.get("key") or service.slugify(name)
    try:
        create = msgspec.convert(
            {
                "name": name,
                "key": key,
                "kind": kind,
                "description": fields.get("description", ""),
                "conditions": conditions,
            },
            SegmentCreate,
        )
    except msgspec.ValidationError as exc:
        raise ApiError(422, str(exc).replace(" - at `$.", " (").replace("`", ")")) from exc
    existing = await service.find_segment(conn, env_id, key, lock=True)
    if existing is None or existing["key"] != key:
        segment = await service.create_segment(conn, env_id, create)
        if segment.kind == "dynamic":
            result.recompute.append((int(segment.id), segment.version))
        return "created"
    if existing["kind"] != kind:
        raise ApiError(422, f"kind: segment {key!r} is {existing['kind']}, not {kind}", "kind")
    wanted = existing["conditions"]  # no conditions cell: they stay as they are
    if conditions is not None:
        wanted = await service.normalise_conditions(conn, env_id, conditions)
    if (create.name, create.description, wanted) == (
        existing["name"],
        existing["description"],
        existing["conditions"],
    ):
        return "unchanged"
    patch = SegmentUpdate(name=create.name, description=create.description)
    if conditions is not None:
        patch.conditions = conditions
    updated, changed = await service.update_segment(conn, env_id, key, patch)
    if changed:
        result.recompute.append((int(updated.id), updated.version))
    return "updated"


async def apply_segment_rows(
    conn: Conn,
    env_id: int,
    columns: list[str],
    mapping: Mapping[str, ColumnMapping],
    records: list[list[str]],
    first_number: int,
) -> SegmentRows:
    """Apply a batch of segment rows inside the caller's transaction."""
    result = SegmentRows()
    for offset, cells in enumerate(records):
        number = first_number + offset
        try:
            async with conn.transaction():
                result.outcomes.append(
                    await _row(conn, env_id, _fields(columns, mapping, cells), result)
                )
        except ApiError as exc:
            result.rejects.append((number, exc.message))
    return result
