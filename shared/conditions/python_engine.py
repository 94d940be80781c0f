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
    Event,
    NoneOf,
    SegmentRef,
    Subject,
    Tag,
)
from shared.conditions.operators import CI_OPERATORS, NEGATION, typed_value
from shared.conditions.parse import retyped
from shared.conditions.references import resolve_segment

Predicate = Callable[[Subject, datetime], bool]
Reader = Callable[[Mapping[str, Any]], Any]
AttributesTest = Callable[[Mapping[str, Any], datetime], bool]
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


def compile_python(
    cond: Condition,
    types: Mapping[str, str] | None = None,
    segments: Mapping[str, int] | None = None,
) -> Predicate:
    """Compile a parsed condition into ``predicate(subject, now) -> bool``.

    ``types`` (attribute name -> declared type; company names prefixed "company:")
    re-resolves the leaves' types when given. ``segments`` (segment key or id as a string ->
    id) resolves segment leaves, which then test ``subject.segments``. Raises ConditionError
    (with the node's JSON path) for a segment leaf naming a segment not in ``segments``."""
    return _compile(retyped(cond, types), "$", _Context(_Clock(), segments))


class _Context:
    __slots__ = ("clock", "segments")

    def __init__(self, clock: _Clock, segments: Mapping[str, int] | None) -> None:
        self.clock = clock
        self.segments = segments


def _compile(cond: Condition, path: str, ctx: _Context) -> Predicate:
    if isinstance(cond, AllOf | AnyOf | NoneOf):
        key = "all" if isinstance(cond, AllOf) else "any" if isinstance(cond, AnyOf) else "none"
        parts = tuple(_compile(c, f"{path}.{key}[{i}]", ctx) for i, c in enumerate(cond.children))
        return _group(key, parts)
    if isinstance(cond, Attribute):
        if cond.scope == "company":
            return _company(attribute_test(cond, ctx.clock))
        if cond.attribute in COLUMN_ATTRIBUTES:
            return _column(cond, ctx.clock)
        test = attribute_test(cond, ctx.clock)
        return lambda subject, now: test(subject.attributes, now)
    if isinstance(cond, Bucket):
        return _bucket(cond)
    if isinstance(cond, Tag):
        return _tag(cond)
    if isinstance(cond, SegmentRef):
        segment_id = resolve_segment(cond, ctx.segments, path)
        return lambda subject, now: segment_id in subject.segments
    return _event(cond, ctx.clock)


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


def attribute_reader(leaf: Attribute, ci: bool = False) -> Reader:
    """attributes dict -> the leaf's attribute coerced to its type (folded when ``ci``), or
    None when missing (absent, null or unreadable as the type). Not for column attributes."""
    name = leaf.attribute
    if leaf.type is None:  # untyped is_set: any value but null and []
        return lambda a: None if (v := a.get(name)) is None or v == [] else v
    coerce = _TYPED_READERS[leaf.type]
    if ci and leaf.type == "string":
        return lambda a: None if (t := to_text(a.get(name))) is None else fold(t)
    if ci and leaf.type == "list":
        return lambda a: None if (xs := to_list(a.get(name))) is None else [fold(x) for x in xs]
    return lambda a: coerce(a.get(name))


def _uses_ci(leaf: Attribute) -> bool:
    op = NEGATION.get(leaf.op, leaf.op)
    return leaf.ci and op in CI_OPERATORS and leaf.type in ("string", "list")


def _value_test(leaf: Attribute, clock: _Clock) -> Callable[[Any, datetime], bool]:
    """(coerced attribute value, now) -> bool for the leaf's positive operator."""
    value = typed_value(leaf)
    if _uses_ci(leaf):
        value = tuple(fold(v) for v in value) if isinstance(value, tuple) else fold(value)
    return _test(NEGATION.get(leaf.op, leaf.op), value, leaf.type, clock)


def attribute_test(leaf: Attribute, clock: _Clock | None = None) -> AttributesTest:
    """(attributes dict, now) -> whether the leaf holds on those attributes (negative
    operators included: they hold exactly when their positive twin does not)."""
    read = attribute_reader(leaf, _uses_ci(leaf))
    test = _value_test(leaf, clock or _Clock())

    def positive(attributes: Mapping[str, Any], now: datetime) -> bool:
        x = read(attributes)
        return x is not None and test(x, now)

    if leaf.op not in NEGATION:
        return positive
    return lambda attributes, now: not positive(attributes, now)


def _column(leaf: Attribute, clock: _Clock) -> Predicate:
    name = leaf.attribute
    test = _value_test(leaf, clock)
    positive: Predicate = lambda subject, now: test(datetime_us(getattr(subject, name)), now)  # noqa: E731
    if leaf.op not in NEGATION:
        return positive
    return lambda subject, now: not positive(subject, now)


def _company(test: AttributesTest) -> Predicate:
    """A company-scope leaf: holds when it holds for any of the user's companies."""

    def any_company(subject: Subject, now: datetime) -> bool:
        for company in subject.companies:
            if test(company, now):
                return True
        return False

    return any_company


def _tag(leaf: Tag) -> Predicate:
    key, value = leaf.key, leaf.value
    if value is not None:
        pair = (key, value)
        return lambda subject, now: pair in subject.tags

    def has_key(subject: Subject, now: datetime) -> bool:
        for k, _ in subject.tags:
            if k == key:
                return True
        return False

    return has_key


def event_count(counts: Mapping[int, int] | None, within_days: int | None, now_us: int) -> int:
    """The events counted by an event leaf: every day's count, or with ``within_days`` N the
    days d >= today - N + 1 (today = the UTC day of ``now``, as an epoch day number)."""
    if not counts:
        return 0
    if within_days is None:
        return sum(counts.values())
    start = now_us // US_PER_DAY - within_days + 1
    return sum(n for day, n in counts.items() if day >= start)


def count_test(op: str, value: int | tuple[int, int]) -> Callable[[int], bool]:
    """count -> bool for an event leaf's operator."""
    if isinstance(value, tuple):
        lo, hi = value
        return lambda n: lo <= n <= hi
    v = value
    return {
        "is": lambda n: n == v,
        "not": lambda n: n != v,
        "lt": lambda n: n < v,
        "lte": lambda n: n <= v,
        "gt": lambda n: n > v,
        "gte": lambda n: n >= v,
    }[op]


def _event(leaf: Event, clock: _Clock) -> Predicate:
    name, days = leaf.event, leaf.within_days
    test = count_test(leaf.op, leaf.value)

    def counted(subject: Subject, now: datetime) -> bool:
        return test(event_count(subject.events.get(name), days, clock(now)))

    return counted


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
        found: Callable[[str], bool] = v.found
        return lambda x, now: found(x)
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
