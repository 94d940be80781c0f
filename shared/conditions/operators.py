"""Attribute operators: which types each applies to, type inference from the condition value,
and coercion of condition values to the leaf's type (the compile-time half of both engines).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec

from shared.conditions.coerce import (
    epoch_number_us,
    iso_us,
    numeric_string,
    to_bool,
    to_text,
)
from shared.conditions.model import Attribute, AttrType
from shared.conditions.regex import compile_regex

MAX_STRING = 1000
MAX_LIST = 1000
MAX_DAYS = 1_000_000

_ALL = frozenset({"string", "number", "boolean", "datetime", "list"})
_ORDERED = frozenset({"number", "datetime"})
OPERATOR_TYPES: dict[str, frozenset[str]] = {
    "is_set": _ALL,
    "is_not_set": _ALL,
    "is": _ALL - {"list"},
    "not": _ALL - {"list"},
    "in": frozenset({"string", "number"}),
    "not_in": frozenset({"string", "number"}),
    "contains": frozenset({"string"}),
    "not_contains": frozenset({"string"}),
    "starts_with": frozenset({"string"}),
    "ends_with": frozenset({"string"}),
    "regex": frozenset({"string"}),
    "lt": _ORDERED,
    "lte": _ORDERED,
    "gt": _ORDERED,
    "gte": _ORDERED,
    "between": _ORDERED,
    "before": frozenset({"datetime"}),
    "after": frozenset({"datetime"}),
    "on": frozenset({"datetime"}),
    "within_last_days": frozenset({"datetime"}),
    "more_than_days_ago": frozenset({"datetime"}),
    "includes_any": frozenset({"list"}),
    "includes_all": frozenset({"list"}),
    "not_includes_any": frozenset({"list"}),
    "not_includes_all": frozenset({"list"}),
}
# Negative operators evaluate as NOT of their positive twin, in both engines.
NEGATION: dict[str, str] = {
    "is_not_set": "is_set",
    "not": "is",
    "not_in": "in",
    "not_contains": "contains",
    "not_includes_any": "includes_any",
    "not_includes_all": "includes_all",
}
# Operators whose string comparison honours ``ci``.
CI_OPERATORS = frozenset(
    {"is", "in", "contains", "starts_with", "ends_with", "includes_any", "includes_all"}
)
_LIST_VALUE = frozenset({"in", "not_in", "includes_any", "includes_all"})
_LIST_VALUE |= {"not_includes_any", "not_includes_all"}


class ValueProblem(ValueError):
    """A condition value that does not fit; ``where`` is a suffix of the JSON path."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(message)
        self.where = where


def _is_number(value: Any) -> bool:
    return type(value) in (int, float)


def _looks_datetime(value: Any) -> bool:
    return isinstance(value, str) and len(value) >= 10 and iso_us(value) is not None


def infer_type(op: str, value: Any) -> AttrType | None:
    """The type a leaf compares as when the attribute has no declared type."""
    positive = NEGATION.get(op, op)
    if positive == "is_set":
        return None
    if positive == "is":
        if type(value) is bool:
            return "boolean"
        return "number" if _is_number(value) else "string"
    if positive == "in":
        items = value if isinstance(value, list) else []
        return "number" if items and all(_is_number(v) for v in items) else "string"
    if op in ("lt", "lte", "gt", "gte", "between"):
        first = value[0] if op == "between" and isinstance(value, list) and value else value
        return "datetime" if _looks_datetime(first) else "number"
    types = OPERATOR_TYPES[op]
    return "datetime" if types == {"datetime"} else "list" if types == {"list"} else "string"


def _scalar(value: Any, kind: AttrType, name: str, where: str) -> Any:
    """One condition value coerced to ``kind``; raises ValueProblem."""
    result: Any = None
    if kind == "string":
        result = to_text(value)
        if isinstance(result, str) and len(result) > MAX_STRING:
            raise ValueProblem(where, f"string values are limited to {MAX_STRING} characters")
    elif kind == "number":
        if _is_number(value):
            result = value if type(value) is int else Decimal(repr(value))
            if isinstance(result, Decimal) and not result.is_finite():
                result = None
        elif isinstance(value, str):
            result = numeric_string(value)
    elif kind == "boolean":
        result = to_bool(value)
    elif kind == "datetime":
        if isinstance(value, str):
            result = iso_us(value)
        elif _is_number(value):
            number = _scalar(value, "number", name, where)
            result = epoch_number_us(number)
    if result is None:
        article = "an" if kind[0] in "aeiou" else "a"
        raise ValueProblem(where, f'expected {article} {kind} for attribute "{name}" ({kind})')
    return result


def typed_value(leaf: Attribute) -> Any:
    """The leaf's value coerced to its type, in the form both engines compile from:
    None (is_set), a scalar, a tuple (in / includes), (lo, hi) (between), an int day count
    (within_last_days / more_than_days_ago) or a CompiledRegex. Raises ValueProblem."""
    op, value, kind, name = leaf.op, leaf.value, leaf.type, leaf.attribute
    positive = NEGATION.get(op, op)
    if positive == "is_set":
        if value is not msgspec.UNSET:
            raise ValueProblem(".value", f'operator "{op}" takes no value')
        return None
    if value is msgspec.UNSET:
        raise ValueProblem(".value", f'operator "{op}" needs a value')
    assert kind is not None
    if positive in _LIST_VALUE:
        if not isinstance(value, list):
            raise ValueProblem(".value", f'operator "{op}" needs a list of values')
        if len(value) > MAX_LIST:
            raise ValueProblem(".value", f"lists are limited to {MAX_LIST} values")
        item_kind: AttrType = "string" if kind == "list" else kind
        return tuple(_scalar(v, item_kind, name, f".value[{i}]") for i, v in enumerate(value))
    if op == "between":
        if not isinstance(value, list) or len(value) != 2:
            raise ValueProblem(".value", 'operator "between" needs a list [lo, hi]')
        return tuple(_scalar(v, kind, name, f".value[{i}]") for i, v in enumerate(value))
    if op in ("within_last_days", "more_than_days_ago"):
        if type(value) is not int or not 0 <= value <= MAX_DAYS:
            raise ValueProblem(".value", f"expected a whole number of days from 0 to {MAX_DAYS}")
        return value
    if op == "regex":
        if not isinstance(value, str):
            raise ValueProblem(".value", "expected a regex pattern (a string)")
        try:
            return compile_regex(value)
        except ValueError as exc:
            raise ValueProblem(".value", str(exc)) from None
    if isinstance(value, list | dict) or value is None:
        raise ValueProblem(".value", f'operator "{op}" needs a single value')
    return _scalar(value, kind, name, ".value")
