"""The Python engine: a condition compiled once into plain closures over a Subject.

Used by the worker for the few users a batch touched. Condition values are coerced (and
case-folded, and regexes compiled) at compile time; per evaluation a leaf reads one attribute,
coerces it (see :mod:`shared.conditions.coerce`) and compares.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from shared.conditions.coerce import (
    US_PER_DAY,
    datetime_us,
    fold,
    to_bool,
    to_epoch_us,
    to_list,
    to_number,
    to_text,
)
from shared.conditions.model import (
    COLUMN_ATTRIBUTES,
    AllOf,
    AnyOf,
    Attribute,
    Bucket,
    Condition,
    ConditionError,
    NoneOf,
    Subject,
)
from shared.conditions.operators import CI_OPERATORS, NEGATION, typed_value
from shared.conditions.parse import retyped

Predicate = Callable[[Subject, datetime], bool]
Reader = Callable[[Subject], Any]
_TYPED_READERS: dict[str, Callable[[Any], Any]] = {
    "string": to_text,
    "number": to_number,
    "boolean": to_bool,
    "datetime": to_epoch_us,
    "list": to_list,
}


class _Clock:
    """``now`` as epoch microseconds, converted once per distinct ``now`` object."""

    __slots__ = ("now", "us")

    def __init__(self) -> None:
        self.now: datetime | None = None
        self.us = 0

    def __call__(self, now: datetime) -> int:
        if now is not self.now:
            self.us = datetime_us(now)
            self.now = now
        return self.us


def compile_python(cond: Condition, types: Mapping[str, str] | None = None) -> Predicate:
    """Compile a parsed condition into ``predicate(subject, now) -> bool``.

    ``types`` (attribute name -> declared type) re-resolves the leaves' types when given.
    Raises ConditionError for leaves whose evaluation is not available yet."""
    return _compile(retyped(cond, types), "$", _Clock())


def _compile(cond: Condition, path: str, clock: _Clock) -> Predicate:
    if isinstance(cond, AllOf | AnyOf | NoneOf):
        key = "all" if isinstance(cond, AllOf) else "any" if isinstance(cond, AnyOf) else "none"
        parts = tuple(_compile(c, f"{path}.{key}[{i}]", clock) for i, c in enumerate(cond.children))
        return _group(key, parts)
    if isinstance(cond, Attribute):
        if cond.scope != "user":
            raise ConditionError(path, "company-scope attributes are not supported yet")
        return _attribute(cond, clock)
    if isinstance(cond, Bucket):
        return _bucket(cond)
    raise ConditionError(path, f"{type(cond).__name__} conditions are not supported yet")


def _group(key: str, parts: tuple[Predicate, ...]) -> Predicate:
    if key == "all":

        def all_of(subject: Subject, now: datetime) -> bool:
            for part in parts:
                if not part(subject, now):
                    return False
            return True

        return all_of

    def any_of(subject: Subject, now: datetime) -> bool:
        for part in parts:
            if part(subject, now):
                return True
        return False

    if key == "any":
        return any_of
    return lambda subject, now: not any_of(subject, now)


def _reader(leaf: Attribute, ci: bool) -> Reader:
    """subject -> the attribute coerced to the leaf's type (folded when ``ci``), or None."""
    name = leaf.attribute
    if name in COLUMN_ATTRIBUTES:
        return lambda s: datetime_us(getattr(s, name))
    if leaf.type is None:  # untyped is_set: any value but null and []
        return lambda s: None if (v := s.attributes.get(name)) is None or v == [] else v
    coerce = _TYPED_READERS[leaf.type]
    if ci and leaf.type == "string":
        return lambda s: None if (t := to_text(s.attributes.get(name))) is None else fold(t)
    if ci and leaf.type == "list":
        return lambda s: (
            None if (xs := to_list(s.attributes.get(name))) is None else [fold(x) for x in xs]
        )
    return lambda s: coerce(s.attributes.get(name))


def _attribute(leaf: Attribute, clock: _Clock) -> Predicate:
    op = NEGATION.get(leaf.op, leaf.op)
    ci = leaf.ci and op in CI_OPERATORS and leaf.type in ("string", "list")
    read = _reader(leaf, ci)
    value = typed_value(leaf)
    if ci:
        value = tuple(fold(v) for v in value) if isinstance(value, tuple) else fold(value)
    test = _test(op, value, leaf.type, clock)

    def positive(subject: Subject, now: datetime) -> bool:
        x = read(subject)
        return x is not None and test(x, now)

    if op == leaf.op:
        return positive
    return lambda subject, now: not positive(subject, now)


def _test(op: str, v: Any, kind: str | None, clock: _Clock) -> Callable[[Any, datetime], bool]:
    """(coerced attribute value, now) -> bool for a positive operator."""
    if op == "is_set":
        if kind == "list":
            return lambda x, now: len(x) > 0
        return lambda x, now: True
    if op in ("is", "gt", "gte", "lt", "lte", "before", "after"):
        return _compare(op, v)
    if op == "in":
        members = frozenset(v)
        return lambda x, now: x in members
    if op == "contains":
        return lambda x, now: v in x
    if op == "starts_with":
        return lambda x, now: x.startswith(v)  # type: ignore[no-any-return]
    if op == "ends_with":
        return lambda x, now: x.endswith(v)  # type: ignore[no-any-return]
    if op == "regex":
        search = v.search
        return lambda x, now: search(x) is not None
    if op == "between":
        lo, hi = v
        return lambda x, now: lo <= x <= hi  # type: ignore[no-any-return]
    if op == "on":
        start = v // US_PER_DAY * US_PER_DAY
        end = start + US_PER_DAY
        return lambda x, now: start <= x < end  # type: ignore[no-any-return]
    if op == "within_last_days":
        span = v * US_PER_DAY
        return lambda x, now: (n := clock(now)) - span <= x <= n
    if op == "more_than_days_ago":
        span = v * US_PER_DAY
        return lambda x, now: x < clock(now) - span  # type: ignore[no-any-return]
    if op == "includes_any":
        wanted = frozenset(v)
        return lambda x, now: not wanted.isdisjoint(x)
    if op == "includes_all":
        wanted = frozenset(v)
        return lambda x, now: wanted.issubset(x)
    raise AssertionError(op)


def _compare(op: str, v: Any) -> Callable[[Any, datetime], bool]:
    if op == "is":
        return lambda x, now: x == v  # type: ignore[no-any-return]
    if op in ("gt", "after"):
        return lambda x, now: x > v  # type: ignore[no-any-return]
    if op == "gte":
        return lambda x, now: x >= v  # type: ignore[no-any-return]
    if op in ("lt", "before"):
        return lambda x, now: x < v  # type: ignore[no-any-return]
    return lambda x, now: x <= v  # type: ignore[no-any-return]


def bucket_of(seed: str, user_id: str) -> int:
    """The rollout bucket 0..99 of a user for a seed (md5, as in the spec)."""
    digest = hashlib.md5(f"{seed}:{user_id}".encode(), usedforsecurity=False).hexdigest()
    return int(digest[:8], 16) % 100


def _bucket(leaf: Bucket) -> Predicate:
    seed, lo, hi = leaf.seed, leaf.lo, leaf.hi

    def in_bucket(subject: Subject, now: datetime) -> bool:
        uid = subject.user_id
        return uid is not None and lo <= bucket_of(seed, uid) < hi

    return in_bucket
