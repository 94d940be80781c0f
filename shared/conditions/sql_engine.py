"""The SQL engine: a condition compiled into one parameterised WHERE fragment over
``users {alias}``, for bulk recompute, user-list filters, counts and previews.

Attribute names and condition values are always bound parameters; the SQL text holds only
constants. Every leaf is two-valued: ``coalesce(positive, false)``, and a negative operator
is ``NOT coalesce(positive, false)``, so NULL (missing) never leaks into NOT or OR.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from shared.conditions import sql_coerce as sc
from shared.conditions.coerce import US_PER_DAY, fold
from shared.conditions.model import (
    COLUMN_ATTRIBUTES,
    AllOf,
    AnyOf,
    Attribute,
    Bucket,
    Condition,
    ConditionError,
    NoneOf,
)
from shared.conditions.operators import CI_OPERATORS, NEGATION, typed_value
from shared.conditions.parse import retyped

_COMPARE = {"is": "=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "before": "<", "after": ">"}
_ARRAY_TYPE = {"string": "text[]", "number": "numeric[]"}


class _Params:
    """Parameter values, numbered from ``first``; attribute names are bound once each."""

    def __init__(self, first: int) -> None:
        self.first = first
        self.values: list[Any] = []
        self.names: dict[str, str] = {}

    def add(self, value: Any, cast: str) -> str:
        self.values.append(value)
        return f"${self.first + len(self.values) - 1}::{cast}"

    def name(self, name: str) -> str:
        if name not in self.names:
            self.names[name] = self.add(name, "text")
        return self.names[name]


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _numeric(value: int | Decimal) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(value)


class _Compiler:
    def __init__(self, alias: str, params: _Params, now_param: int | None) -> None:
        self.alias = alias
        self.params = params
        self.now_sql = "now()" if now_param is None else f"${now_param}::timestamptz"

    def node(self, cond: Condition, path: str) -> str:
        if isinstance(cond, AllOf | AnyOf | NoneOf):
            key = "all" if isinstance(cond, AllOf) else "any" if isinstance(cond, AnyOf) else "none"
            parts = [self.node(c, f"{path}.{key}[{i}]") for i, c in enumerate(cond.children)]
            if key == "all":
                return "(" + " AND ".join(parts) + ")" if parts else "true"
            joined = "(" + " OR ".join(parts) + ")" if parts else "false"
            return joined if key == "any" else f"(NOT {joined})"
        if isinstance(cond, Attribute):
            if cond.scope != "user":
                raise ConditionError(path, "company-scope attributes are not supported yet")
            positive = self.attribute(cond)
        elif isinstance(cond, Bucket):
            positive = self.bucket(cond)
        else:
            raise ConditionError(path, f"{type(cond).__name__} conditions are not supported yet")
        if NEGATION.get(getattr(cond, "op", ""), None):
            return f"(NOT coalesce({positive}, false))"
        return f"coalesce({positive}, false)"

    def reader(self, leaf: Attribute, ci: bool) -> str:
        if leaf.attribute in COLUMN_ATTRIBUTES:
            return sc.column_epoch_us(f"{self.alias}.{leaf.attribute}")
        v = f"({self.alias}.attributes -> {self.params.name(leaf.attribute)})"
        if leaf.type is None:
            return v
        if leaf.type == "string":
            text = sc.as_text(v)
            return sc.fold(text) if ci else f"({text})"
        if leaf.type == "number":
            return f"({sc.as_number(v)})"
        if leaf.type == "boolean":
            return f"({sc.as_boolean(v)})"
        if leaf.type == "datetime":
            return f"({sc.as_epoch_us(v)})"
        return f"({sc.as_list(v, ci)})"

    def attribute(self, leaf: Attribute) -> str:
        op = NEGATION.get(leaf.op, leaf.op)
        ci = leaf.ci and op in CI_OPERATORS and leaf.type in ("string", "list")
        x = self.reader(leaf, ci)
        v = typed_value(leaf)
        if ci:
            v = tuple(fold(s) for s in v) if isinstance(v, tuple) else fold(v)
        add = self.params.add
        kind = leaf.type
        if op == "is_set":
            if kind is None:
                return f"(jsonb_typeof({x}) <> 'null' AND {x} <> '[]'::jsonb)"
            return f"(cardinality({x}) > 0)" if kind == "list" else f"({x} IS NOT NULL)"
        cast = {"string": "text", "boolean": "boolean"}.get(kind or "", "numeric")
        if op in _COMPARE:
            value = v if cast != "numeric" else _numeric(v)
            return f"({x} {_COMPARE[op]} {add(value, cast)})"
        if op == "in":
            values = list(v) if kind == "string" else [_numeric(n) for n in v]
            return f"({x} = ANY({add(values, _ARRAY_TYPE[kind or 'string'])}))"
        if op == "contains":
            return f"({x} LIKE {add('%' + _like_escape(v) + '%', 'text')})"
        if op == "starts_with":
            return f"({x} LIKE {add(_like_escape(v) + '%', 'text')})"
        if op == "ends_with":
            return f"({x} LIKE {add('%' + _like_escape(v), 'text')})"
        if op == "regex":
            return f'({x} COLLATE "C" ~ {add(v.pg, "text")})'
        if op == "between":
            lo, hi = (_numeric(n) for n in v)
            return f"({x} BETWEEN {add(lo, 'numeric')} AND {add(hi, 'numeric')})"
        if op == "on":
            start = v // US_PER_DAY * US_PER_DAY
            return (
                f"({x} >= {add(_numeric(start), 'numeric')} "
                f"AND {x} < {add(_numeric(start + US_PER_DAY), 'numeric')})"
            )
        if op in ("within_last_days", "more_than_days_ago"):
            now_us = sc.column_epoch_us(self.now_sql)
            since = f"{now_us} - {add(_numeric(v * US_PER_DAY), 'numeric')}"
            if op == "within_last_days":
                return f"({x} BETWEEN {since} AND {now_us})"
            return f"({x} < {since})"
        if op == "includes_any":
            return f"({x} && {add(list(v), 'text[]')})"
        if op == "includes_all":
            return f"({x} @> {add(list(v), 'text[]')})"
        raise AssertionError(op)

    def bucket(self, leaf: Bucket) -> str:
        seed = self.params.add(leaf.seed, "text")
        hashed = f"substr(md5({seed} || ':' || {self.alias}.user_id), 1, 8)"
        bucket = f"((('x' || {hashed})::bit(32)::bigint % 100)::int)"
        lo, hi = self.params.add(leaf.lo, "int"), self.params.add(leaf.hi, "int")
        return f"(int4range({lo}, {hi}) @> {bucket})"


def compile_sql(
    cond: Condition,
    *,
    alias: str = "u",
    first_param: int = 1,
    now_param: int | None = None,
    types: Mapping[str, str] | None = None,
) -> tuple[str, list[Any]]:
    """Compile a parsed condition into ``(where_fragment, params)`` over ``users {alias}``.

    Parameters are numbered from ``$first_param``. Time-relative leaves read ``now`` from
    ``$now_param`` (a timestamptz the caller binds) or, when None, the transaction's
    ``now()``. ``types`` re-resolves the leaves' types when given. Raises ConditionError for
    leaves whose evaluation is not available yet."""
    if not alias.isidentifier():
        raise ValueError(f"alias must be a plain identifier, not {alias!r}")
    params = _Params(first_param)
    sql = _Compiler(alias, params, now_param).node(retyped(cond, types), "$")
    return sql, params.values
