"""Parsing and validation of condition JSON into the typed tree, and back to JSON."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from shared.conditions.model import (
    ATTR_TYPES,
    COLUMN_ATTRIBUTES,
    AllOf,
    AnyOf,
    Attribute,
    AttrType,
    Bucket,
    Condition,
    ConditionError,
    Event,
    NoneOf,
    SegmentRef,
    Tag,
)
from shared.conditions.operators import (
    MAX_DAYS,
    MAX_STRING,
    OPERATOR_TYPES,
    ValueProblem,
    infer_type,
    typed_value,
)

MAX_LEAVES = 100
MAX_DEPTH = 10
MAX_NAME = 255
EVENT_OPS = frozenset({"is", "not", "lt", "lte", "gt", "gte", "between"})
_GROUPS: dict[str, type[AllOf] | type[AnyOf] | type[NoneOf]] = {
    "all": AllOf,
    "any": AnyOf,
    "none": NoneOf,
}
_ATTRIBUTE_KEYS = frozenset({"attribute", "op", "value", "scope", "ci"})
_EVENT_KEYS = frozenset({"event", "op", "value", "withinDays"})


def _type_key(name: str, scope: str) -> str:
    return name if scope == "user" else f"company:{name}"


class _Parser:
    def __init__(self, types: Mapping[str, str] | None) -> None:
        self.types = types or {}
        self.leaves = 0

    def node(self, obj: Any, path: str, depth: int) -> Condition:
        if depth > MAX_DEPTH:
            raise ConditionError(path, f"conditions nest at most {MAX_DEPTH} levels deep")
        if not isinstance(obj, dict):
            raise ConditionError(path, "expected a condition object")
        group = [k for k in _GROUPS if k in obj]
        if group:
            if len(obj) != 1:
                raise ConditionError(path, "a group has exactly one key: all, any or none")
            key = group[0]
            children = obj[key]
            if not isinstance(children, list):
                raise ConditionError(f"{path}.{key}", "expected a list of conditions")
            return _GROUPS[key](
                tuple(self.node(c, f"{path}.{key}[{i}]", depth + 1) for i, c in enumerate(children))
            )
        self.leaves += 1
        if self.leaves > MAX_LEAVES:
            raise ConditionError(path, f"a condition has at most {MAX_LEAVES} leaves")
        if "attribute" in obj:
            return self.attribute(obj, path)
        if "event" in obj:
            return self.event(obj, path)
        for key, parse in (("tag", self.tag), ("segment", self.segment), ("bucket", self.bucket)):
            if key in obj:
                if len(obj) != 1:
                    extra = sorted(set(obj) - {key})[0]
                    raise ConditionError(f"{path}.{extra}", f'unexpected key in a "{key}" leaf')
                return parse(obj[key], f"{path}.{key}")
        raise ConditionError(
            path, "expected all, any, none, attribute, tag, segment, event or bucket"
        )

    def attribute(self, obj: dict[str, Any], path: str) -> Attribute:
        for key in obj:
            if key not in _ATTRIBUTE_KEYS:
                raise ConditionError(f"{path}.{key}", "unexpected key in an attribute leaf")
        name = _name(obj["attribute"], f"{path}.attribute")
        op = obj.get("op")
        if not isinstance(op, str) or op not in OPERATOR_TYPES:
            raise ConditionError(f"{path}.op", f"unknown operator {op!r}")
        scope = obj.get("scope", "user")
        if scope not in ("user", "company"):
            raise ConditionError(f"{path}.scope", 'expected "user" or "company"')
        ci = obj.get("ci", False)
        if type(ci) is not bool:
            raise ConditionError(f"{path}.ci", "expected true or false")
        if ci and op == "regex":
            raise ConditionError(f"{path}.ci", "ci does not apply to regex (use [Aa] classes)")
        value = obj.get("value", msgspec.UNSET)
        declared = self.types.get(_type_key(name, scope))
        if scope == "user" and name in COLUMN_ATTRIBUTES:
            declared = "datetime"
        kind: AttrType | None
        if declared in ATTR_TYPES:
            kind = declared  # type: ignore[assignment]
            if kind not in OPERATOR_TYPES[op]:
                raise ConditionError(
                    f"{path}.op", f'operator "{op}" does not apply to attribute "{name}" ({kind})'
                )
        else:
            kind = infer_type(op, value)
        leaf = Attribute(name, op, value, scope, ci, kind)  # type: ignore[arg-type]
        try:
            typed_value(leaf)
        except ValueProblem as problem:
            raise ConditionError(path + problem.where, str(problem)) from None
        return leaf

    def event(self, obj: dict[str, Any], path: str) -> Event:
        for key in obj:
            if key not in _EVENT_KEYS:
                raise ConditionError(f"{path}.{key}", "unexpected key in an event leaf")
        name = _name(obj["event"], f"{path}.event")
        op = obj.get("op")
        if op not in EVENT_OPS:
            raise ConditionError(f"{path}.op", f"expected one of {', '.join(sorted(EVENT_OPS))}")
        value = obj.get("value")
        count: int | tuple[int, int]
        if op == "between":
            if not (isinstance(value, list) and len(value) == 2):
                raise ConditionError(f"{path}.value", "expected a list [lo, hi] of counts")
            count = (_count(value[0], f"{path}.value[0]"), _count(value[1], f"{path}.value[1]"))
        else:
            count = _count(value, f"{path}.value")
        days = obj.get("withinDays")
        if days is not None and (type(days) is not int or not 1 <= days <= MAX_DAYS):
            raise ConditionError(
                f"{path}.withinDays", f"expected a whole number of days from 1 to {MAX_DAYS}"
            )
        return Event(name, op, count, days)

    def tag(self, obj: Any, path: str) -> Tag:
        if not isinstance(obj, dict) or "key" not in obj or not set(obj) <= {"key", "value"}:
            raise ConditionError(path, 'expected {"key": ..., "value": ...}')
        value = obj.get("value")
        if value is not None and not (isinstance(value, str) and len(value) <= MAX_STRING):
            raise ConditionError(
                f"{path}.value", f"expected a string of at most {MAX_STRING} characters"
            )
        return Tag(_name(obj["key"], f"{path}.key"), value)

    def segment(self, obj: Any, path: str) -> SegmentRef:
        if type(obj) is int and obj > 0:
            return SegmentRef(obj)
        return SegmentRef(_name(obj, path))

    def bucket(self, obj: Any, path: str) -> Bucket:
        if not isinstance(obj, dict) or set(obj) != {"seed", "from", "to"}:
            raise ConditionError(path, 'expected {"seed": ..., "from": ..., "to": ...}')
        seed = obj["seed"]
        if not isinstance(seed, str) or len(seed) > MAX_STRING:
            raise ConditionError(
                f"{path}.seed", f"expected a string of at most {MAX_STRING} characters"
            )
        bounds = []
        for key in ("from", "to"):
            bound = obj[key]
            if type(bound) is not int or not 0 <= bound <= 100:
                raise ConditionError(f"{path}.{key}", "expected a whole number from 0 to 100")
            bounds.append(bound)
        if bounds[0] > bounds[1]:
            raise ConditionError(f"{path}.to", '"to" must not be less than "from"')
        return Bucket(seed, bounds[0], bounds[1])


def _name(value: Any, path: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_NAME:
        raise ConditionError(path, f"expected a name of 1 to {MAX_NAME} characters")
    return value


def _count(value: Any, path: str) -> int:
    if type(value) is not int or value < 0:
        raise ConditionError(path, "expected a whole number of events (0 or more)")
    return value


def parse_condition(obj: Any, types: Mapping[str, str] | None = None) -> Condition:
    """Validate a condition (plain JSON, as decoded) and build its typed tree.

    ``types`` maps attribute names to declared types ("string", "number", "boolean",
    "datetime", "list"; company-scope names are prefixed "company:"); attributes without a
    declared type compare as the type inferred from the operator and value. Raises
    ConditionError naming the offending node's JSON path."""
    return _Parser(types).node(obj, "$", 1)


def condition_to_json(cond: Condition) -> Any:
    """The plain JSON form of a condition (defaults omitted), for storage and echo."""
    if isinstance(cond, AllOf | AnyOf | NoneOf):
        key = "all" if isinstance(cond, AllOf) else "any" if isinstance(cond, AnyOf) else "none"
        return {key: [condition_to_json(c) for c in cond.children]}
    if isinstance(cond, Attribute):
        out: dict[str, Any] = {"attribute": cond.attribute, "op": cond.op}
        if cond.value is not msgspec.UNSET:
            out["value"] = cond.value
        if cond.scope != "user":
            out["scope"] = cond.scope
        if cond.ci:
            out["ci"] = True
        return out
    if isinstance(cond, Tag):
        tag: dict[str, Any] = {"key": cond.key}
        if cond.value is not None:
            tag["value"] = cond.value
        return {"tag": tag}
    if isinstance(cond, SegmentRef):
        return {"segment": cond.segment}
    if isinstance(cond, Event):
        event: dict[str, Any] = {"event": cond.event, "op": cond.op}
        event["value"] = list(cond.value) if isinstance(cond.value, tuple) else cond.value
        if cond.within_days is not None:
            event["withinDays"] = cond.within_days
        return event
    return {"bucket": {"seed": cond.seed, "from": cond.lo, "to": cond.hi}}


def retyped(cond: Condition, types: Mapping[str, str] | None) -> Condition:
    """``cond`` re-resolved against ``types`` (unchanged when ``types`` is None)."""
    return cond if types is None else parse_condition(condition_to_json(cond), types)
