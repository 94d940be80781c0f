"""Explain: why a user is (or is not) matched by a condition.

The answer is the condition's JSON tree with ``result`` at every node and, at the leaves, what
the user actually has: an attribute's value after coercion to the leaf's type (``actual``; one
per company for company scope), the tag values under the key, the event count, the bucket.
Leaf results come from the Python engine itself, so an explanation never disagrees with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from shared.conditions.coerce import datetime_us
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
from shared.conditions.parse import condition_to_json, retyped
from shared.conditions.python_engine import (
    attribute_reader,
    bucket_of,
    compile_python,
    event_count,
)
from shared.conditions.references import resolve_segment

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def explain(
    cond: Condition,
    subject: Subject,
    now: datetime,
    types: Mapping[str, str] | None = None,
    segments: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The annotated tree (plain JSON) of ``cond`` for ``subject`` at ``now``; ``types`` and
    ``segments`` as for :func:`shared.conditions.compile_python`. Raises ConditionError as
    compiling would."""
    return _node(retyped(cond, types), "$", subject, now, segments)


def _node(
    cond: Condition,
    path: str,
    subject: Subject,
    now: datetime,
    segments: Mapping[str, int] | None,
) -> dict[str, Any]:
    if isinstance(cond, AllOf | AnyOf | NoneOf):
        key = "all" if isinstance(cond, AllOf) else "any" if isinstance(cond, AnyOf) else "none"
        children = [
            _node(c, f"{path}.{key}[{i}]", subject, now, segments)
            for i, c in enumerate(cond.children)
        ]
        results = [c["result"] for c in children]
        result = all(results) if key == "all" else any(results)
        return {key: children, "result": result if key != "none" else not result}
    out: dict[str, Any] = condition_to_json(cond)
    if isinstance(cond, SegmentRef):
        resolve_segment(cond, segments, path)  # unknown: the same error as compiling
    out["result"] = compile_python(cond, segments=segments)(subject, now)
    if isinstance(cond, Attribute):
        out["type"] = cond.type
        out["actual"] = _actual(cond, subject)
    elif isinstance(cond, Tag):
        out["actual"] = sorted(v for k, v in subject.tags if k == cond.key)
    elif isinstance(cond, Event):
        out["actual"] = event_count(
            subject.events.get(cond.event), cond.within_days, datetime_us(now)
        )
    elif isinstance(cond, Bucket):
        uid = subject.user_id
        out["actual"] = None if uid is None else bucket_of(cond.seed, uid)
    return out


def _actual(leaf: Attribute, subject: Subject) -> Any:
    """The attribute's value after coercion, as JSON (one per company for company scope)."""
    if leaf.scope == "user" and leaf.attribute in COLUMN_ATTRIBUTES:
        return to_json(datetime_us(getattr(subject, leaf.attribute)), "datetime")
    read = attribute_reader(leaf)
    if leaf.scope == "company":
        return [to_json(read(company), leaf.type) for company in subject.companies]
    return to_json(read(subject.attributes), leaf.type)


def to_json(value: Any, kind: str | None) -> Any:
    """A coerced value as JSON: datetimes (epoch microseconds) as ISO-8601 UTC text (the
    number itself when out of datetime's range), exact numbers as JSON numbers."""
    if value is None:
        return None
    if kind == "datetime" and isinstance(value, int):
        try:
            moment = _EPOCH + timedelta(microseconds=value)
        except OverflowError:
            return value
        return moment.isoformat().replace("+00:00", "Z")
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value
