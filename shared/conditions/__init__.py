"""The segment condition language: parsing and validation, and its two engines.

- :func:`parse_condition` / :func:`condition_to_json`: JSON <-> typed tree, with validation.
- :func:`compile_python`: closures evaluating a :class:`Subject` (the worker's touched users).
- :func:`compile_sql`: a parameterised WHERE fragment over ``users`` (bulk recompute, lists).
- :func:`compile_time_flips`: the users whose answer can change by time alone within a window
  (the worker's time pass).
- :func:`explain`: the tree annotated with each node's result and the user's actual values.
- :func:`referenced_segments` / :func:`referenced_attributes` / :func:`referenced_events` /
  :func:`uses_time`: what a condition depends on.

Both engines implement one semantics (``conditions.md``); property tests compare them on a
real PostgreSQL.
"""

from shared.conditions.explain import explain
from shared.conditions.model import (
    AllOf,
    AnyOf,
    Attribute,
    Bucket,
    Condition,
    ConditionError,
    Event,
    NoneOf,
    SegmentRef,
    Subject,
    Tag,
)
from shared.conditions.parse import condition_to_json, parse_condition
from shared.conditions.python_engine import compile_python
from shared.conditions.references import (
    referenced_attributes,
    referenced_events,
    referenced_segments,
    uses_time,
)
from shared.conditions.sql_engine import compile_sql
from shared.conditions.sql_flips import compile_time_flips

__all__ = [
    "AllOf",
    "AnyOf",
    "Attribute",
    "Bucket",
    "Condition",
    "ConditionError",
    "Event",
    "NoneOf",
    "SegmentRef",
    "Subject",
    "Tag",
    "compile_python",
    "compile_sql",
    "compile_time_flips",
    "condition_to_json",
    "explain",
    "parse_condition",
    "referenced_attributes",
    "referenced_events",
    "referenced_segments",
    "uses_time",
]
