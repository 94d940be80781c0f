"""Attribute types: one per (environment, scope, attribute), inferred from the first value seen
or declared through the admin API (``attribute_types`` table).

The worker calls :func:`record_inferred` with each batch's attributes and :func:`fits` to warn
about values that do not read as their attribute's type (kept in the profile, but missing for
conditions); the engines and the admin API read the types with :func:`load_types`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypeAlias

from shared.conditions.coerce import iso_us, to_bool, to_epoch_us, to_list, to_number, to_text
from shared.db import Conn

Scope: TypeAlias = Literal["user", "company", "membership"]
SCOPES: tuple[str, ...] = ("user", "company", "membership")
TYPES: tuple[str, ...] = ("string", "number", "boolean", "datetime", "list")


def type_key(scope: str, name: str) -> str:
    """The key of an attribute in a types map (and in ``ingest_warnings.attribute``):
    the name for user attributes, ``"<scope>:<name>"`` for the others."""
    return name if scope == "user" else f"{scope}:{name}"


def infer_type(value: Any) -> str | None:
    """The type inferred from a first value (spec rules): bool -> boolean, int/float ->
    number, list -> list, a string of 10+ characters reading as an ISO-8601 date or datetime
    -> datetime, other strings -> string; None (null) and objects infer nothing."""
    kind = type(value)
    if kind is bool:
        return "boolean"
    if kind is int or kind is float:
        return "number"
    if kind is list:
        return "list"
    if kind is str:
        return "datetime" if len(value) >= 10 and iso_us(value) is not None else "string"
    return None


_READERS = {
    "string": to_text,
    "number": to_number,
    "boolean": to_bool,
    "datetime": to_epoch_us,
    "list": to_list,
}


def fits(value: Any, type_: str) -> bool:
    """Whether ``value`` reads as ``type_`` under the conditions' coercion rules. Null fits
    every type (it is absence, not a bad value); an unknown type fits everything."""
    if value is None:
        return True
    reader = _READERS.get(type_)
    return reader is None or reader(value) is not None


async def load_types(conn: Conn, env_id: int) -> dict[str, str]:
    """The environment's user and company attribute types, keyed as the condition engines'
    ``types`` parameter expects: user names as they are, company names as "company:<name>"."""
    rows = await conn.fetch(
        """SELECT scope, name, type FROM attribute_types
           WHERE env_id = $1 AND scope IN ('user', 'company')""",
        env_id,
    )
    return {type_key(r["scope"], r["name"]): r["type"] for r in rows}


async def record_inferred(conn: Conn, env_id: int, scope: Scope, values: Mapping[str, Any]) -> None:
    """Record the inferred type of every attribute in ``values`` (name -> a value just seen)
    that has no type yet; existing types, declared or inferred, are kept. One statement."""
    names: list[str] = []
    types: list[str] = []
    for name, value in sorted(values.items()):  # one order: concurrent batches never deadlock
        inferred = infer_type(value)
        if inferred is not None:
            names.append(name)
            types.append(inferred)
    if names:
        await conn.execute(
            """INSERT INTO attribute_types (env_id, scope, name, type)
               SELECT $1, $2, n, t FROM unnest($3::text[], $4::text[]) AS x(n, t)
               ON CONFLICT DO NOTHING""",
            env_id,
            scope,
            names,
            types,
        )
