"""What a condition depends on: segments, attributes, events and the clock. Used to order
segments by their references, load only the data a batch's conditions read, and find the
segments to re-evaluate as time passes or when an attribute's type changes."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from shared.conditions.model import (
    AllOf,
    AnyOf,
    Attribute,
    Condition,
    ConditionError,
    Event,
    NoneOf,
    SegmentRef,
)

#: Attribute operators whose answer depends on ``now``.
TIME_OPERATORS = frozenset({"within_last_days", "more_than_days_ago"})


def leaves(cond: Condition) -> Iterator[Condition]:
    """Every leaf of ``cond``, depth first."""
    if isinstance(cond, AllOf | AnyOf | NoneOf):
        for child in cond.children:
            yield from leaves(child)
    else:
        yield cond


def referenced_segments(cond: Condition) -> set[str]:
    """Keys or ids (as strings) of the segments a condition refers to."""
    return {str(leaf.segment) for leaf in leaves(cond) if isinstance(leaf, SegmentRef)}


def referenced_attributes(cond: Condition) -> set[tuple[str, str]]:
    """(scope, name) of every attribute a condition reads; scope is "user" or "company"
    (user-scope names include the columns ``first_seen_at`` / ``last_seen_at``)."""
    return {(leaf.scope, leaf.attribute) for leaf in leaves(cond) if isinstance(leaf, Attribute)}


def referenced_events(cond: Condition) -> set[str]:
    """Names of the events whose counts a condition reads."""
    return {leaf.event for leaf in leaves(cond) if isinstance(leaf, Event)}


def uses_time(cond: Condition) -> bool:
    """Whether the answer can change with ``now`` alone: relative-date operators
    (``within_last_days``, ``more_than_days_ago``) and event leaves with ``withinDays``.
    (Segment leaves are not followed: a referenced segment answers for itself.)"""
    for leaf in leaves(cond):
        if isinstance(leaf, Attribute) and leaf.op in TIME_OPERATORS:
            return True
        if isinstance(leaf, Event) and leaf.within_days is not None:
            return True
    return False


def resolve_segment(leaf: SegmentRef, segments: Mapping[str, int] | None, path: str) -> int:
    """The id of the segment a segment leaf names, from ``segments`` (key or id as a string
    -> id); ConditionError at ``path.segment`` when it is unknown."""
    ref = str(leaf.segment)
    found = None if segments is None else segments.get(ref)
    if found is None:
        raise ConditionError(f"{path}.segment", f"no segment with key or id {ref!r}")
    return found
