"""Every dynamic segment of an environment compiled into one generated Python function.

The worker evaluates all of an environment's segments for each user a batch touches. The
closures of :mod:`shared.conditions.python_engine` do it one leaf call at a time, and each
leaf reads and coerces its attribute again: a user in an environment of 60 segments had its
dates parsed some twenty times. Here the segments become one function (Python source,
compiled once per definition change) that reads and coerces each attribute a condition uses
once per user, then tests every segment as one short-circuiting ``and`` / ``or`` expression.

One semantics with the closures, by construction: the attribute readers, the leaf operator
tests and the non-attribute leaves (company, tag, event, bucket) are the very functions
:func:`shared.conditions.compile_python` builds; only the groups and the reads are generated.
A segment leaf reads the ids the user holds so far (``res``), which in dependency order is
what the closures see in ``subject.segments``. Tests compare both on the shared vectors and on
random trees.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import msgspec

from shared.conditions.coerce import datetime_us
from shared.conditions.model import (
    COLUMN_ATTRIBUTES,
    AllOf,
    AnyOf,
    Attribute,
    Condition,
    NoneOf,
    SegmentRef,
    Subject,
)
from shared.conditions.operators import NEGATION
from shared.conditions.parse import retyped
from shared.conditions.python_engine import (
    _Clock,
    _compile,
    _Context,
    _uses_ci,
    _value_test,
    attribute_reader,
    compile_python,
)
from shared.conditions.references import leaves, resolve_segment

log = logging.getLogger(__name__)
_json = msgspec.json.Encoder(order="deterministic")

#: ``evaluate(subject, now, res)``: adds to ``res`` the id of every segment whose conditions
#: hold, in the given order (a segment leaf tests ``res`` as it stands).
SegmentsEvaluator = Callable[[Subject, datetime, set[int]], None]


class _Source:
    """The generated function's pieces: constants by name, hoisted reads, segment tests."""

    def __init__(self, ctx: _Context, trees: Sequence[Condition]) -> None:
        self.ctx = ctx
        self.names: dict[str, Any] = {"datetime_us": datetime_us}
        self.reads: dict[tuple[str, str | None, bool], str] = {}
        self.columns: dict[str, str] = {}
        self.lines: list[str] = []
        # an attribute leaf found in several segments is tested once per user (memoized)
        self.repeated = {
            key
            for key, n in Counter(_leaf_key(t) for t in _attribute_leaves(trees)).items()
            if n > 1
        }
        self.memos: dict[bytes, str] = {}

    def const(self, value: Any) -> str:
        name = f"k{len(self.names)}"
        self.names[name] = value
        return name

    def read(self, leaf: Attribute) -> str:
        """The local holding the leaf's attribute as its type (None: missing), read once."""
        ci = _uses_ci(leaf)
        key = (leaf.attribute, leaf.type, ci)
        var = self.reads.get(key)
        if var is None:
            var = self.reads[key] = f"x{len(self.reads)}"
            self.lines.append(f"    {var} = {self.const(attribute_reader(leaf, ci))}(a)")
        return var

    def column(self, name: str) -> str:
        var = self.columns.get(name)
        if var is None:
            var = self.columns[name] = f"c{len(self.columns)}"
            self.lines.append(f"    {var} = datetime_us(subject.{name})")
        return var

    def expr(self, cond: Condition, path: str) -> str:
        if isinstance(cond, AllOf | AnyOf | NoneOf):
            key = "all" if isinstance(cond, AllOf) else "any" if isinstance(cond, AnyOf) else "none"
            parts = [self.expr(c, f"{path}.{key}[{i}]") for i, c in enumerate(cond.children)]
            if key == "all":
                return "(" + " and ".join(parts) + ")" if parts else "True"
            anyone = "(" + " or ".join(parts) + ")" if parts else "False"
            return anyone if key == "any" else f"(not {anyone})"
        if isinstance(cond, Attribute) and cond.scope == "user":
            test = self.const(_value_test(cond, self.ctx.clock))
            if cond.attribute in COLUMN_ATTRIBUTES:
                positive = f"{test}({self.column(cond.attribute)}, now)"
            else:
                x = self.read(cond)
                positive = f"({x} is not None and {test}({x}, now))"
                shared = _leaf_key(cond)
                if shared in self.repeated:
                    memo = self.memos.get(shared)
                    if memo is None:
                        memo = self.memos[shared] = f"m{len(self.memos)}"
                        self.lines.append(f"    {memo} = None")
                    # the test is a bool, never None: None means not yet tested
                    positive = f"({memo} if {memo} is not None else ({memo} := {positive}))"
            return f"(not {positive})" if cond.op in NEGATION else positive
        if isinstance(cond, SegmentRef):
            return f"({resolve_segment(cond, self.ctx.segments, path)} in res)"
        # company attributes, tags, events, buckets: the closure itself
        return f"{self.const(_compile(cond, path, self.ctx))}(subject, now)"


def _attribute_leaves(trees: Sequence[Condition]) -> list[Attribute]:
    """The user-scope attribute leaves of ``trees`` that read ``attributes``."""
    return [
        leaf
        for tree in trees
        for leaf in leaves(tree)
        if isinstance(leaf, Attribute)
        and leaf.scope == "user"
        and leaf.attribute not in COLUMN_ATTRIBUTES
    ]


def _leaf_key(leaf: Attribute) -> bytes:
    """Leaves with the same key test the same thing (their negation aside: the positive test
    is what is shared)."""
    value = None if leaf.value is msgspec.UNSET else leaf.value
    op = NEGATION.get(leaf.op, leaf.op)
    return _json.encode(
        [leaf.attribute, op, leaf.value is msgspec.UNSET, value, leaf.type, leaf.ci]
    )


def compile_segments(
    segments: Sequence[tuple[int, Condition]],
    types: Mapping[str, str] | None = None,
    names: Mapping[str, int] | None = None,
) -> SegmentsEvaluator:
    """Compile ``segments`` ((id, parsed condition), in dependency order) into one evaluator;
    ``types`` and ``names`` as for :func:`shared.conditions.compile_python` (which must
    accept each condition: a ConditionError is raised as it would)."""
    trees = [(segment_id, retyped(cond, types)) for segment_id, cond in segments]
    source = _Source(_Context(_Clock(), names), [tree for _, tree in trees])
    tests = [
        f"    if {source.expr(tree, '$')}:\n        res.add({int(segment_id)})"
        for segment_id, tree in trees
    ]
    code = "\n".join(
        ["def evaluate(subject, now, res):", "    a = subject.attributes", *source.lines, *tests]
    )
    scope = dict(source.names)
    try:
        exec(compile(code, "<segments>", "exec"), scope)  # noqa: S102 - our own generated code
    except (RecursionError, MemoryError, SyntaxError) as exc:  # beyond the parser's limits
        log.warning("segments evaluated by closures: generated code did not compile (%r)", exc)
        return _closures(segments, types, names)
    evaluate: SegmentsEvaluator = scope["evaluate"]
    return evaluate


def _closures(
    segments: Sequence[tuple[int, Condition]],
    types: Mapping[str, str] | None,
    names: Mapping[str, int] | None,
) -> SegmentsEvaluator:
    predicates = [(segment_id, compile_python(cond, types, names)) for segment_id, cond in segments]

    def evaluate(subject: Subject, now: datetime, res: set[int]) -> None:
        for segment_id, predicate in predicates:
            subject.segments = frozenset(res)
            if predicate(subject, now):
                res.add(segment_id)

    return evaluate
