"""The generated evaluator of an environment's segments (shared.conditions.env_engine) gives the
closures' answers: on the random world of bench.world (60 nested trees over every attribute
type, regexes, repeated leaves), with segment references in dependency order and manual
segments, and for regexes on random texts. Single conditions are compared on every leaf and
operator test (tests/conditions/conftest.py) and on the property test's random trees."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bench.world import user_traits, world_segments
from shared.attribute_types import infer_type
from shared.conditions import Subject, parse_condition
from shared.conditions.env_engine import _closures, compile_segments
from shared.conditions.regex import compile_regex
from shared.membership.catalog import EnvSegments, SegmentCatalog
from tests.conditions.test_property import ALPHABET, regexes

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


def _environment(trees: list[Any], types: dict[str, str]) -> EnvSegments:
    rows: list[dict[str, Any]] = [
        {"id": 1, "key": "all-users", "kind": "all", "version": 1, "conditions": None},
        {"id": 2, "key": "beta", "kind": "manual", "version": 1, "conditions": None},
    ]
    rows += [
        {"id": 100 + i, "key": f"w{i}", "kind": "dynamic", "version": 1, "conditions": tree}
        for i, tree in enumerate(trees)
    ]
    return SegmentCatalog()._build(rows, types)


def _subject(n: int, attributes: dict[str, Any]) -> Subject:
    seen = NOW - timedelta(days=n % 40)
    return Subject(n, f"u{n}", attributes, seen, seen + timedelta(hours=n % 30))


def _agree(env: EnvSegments, subjects: list[Subject], manual: set[int]) -> list[set[int]]:
    closures = msgspec.structs.replace(env, evaluator=None)
    assert env.evaluator is not None
    answers = []
    for subject in subjects:
        generated = env.evaluate(msgspec.structs.replace(subject), manual, NOW)
        assert generated == closures.evaluate(msgspec.structs.replace(subject), manual, NOW), (
            subject.attributes
        )
        answers.append(generated)
    return answers


def test_the_world_of_the_bench_evaluates_alike() -> None:
    trees = world_segments(60, 0.4)
    types = {name: infer_type(value) or "string" for name, value in user_traits(0).items()}
    rng = random.Random(7)
    subjects = []
    for n in range(400):
        attributes = user_traits(n, seed=3)
        if n % 5 == 0:  # missing, null and wrongly typed values too
            attributes.pop(rng.choice(sorted(attributes)))
            attributes[rng.choice(sorted(attributes))] = rng.choice([None, "x", 7, [], True])
        subjects.append(_subject(n, attributes))
    answers = _agree(_environment(trees, types), subjects, set())
    sizes = [len(a) for a in answers]
    assert min(sizes) < max(sizes)  # neither all nor nothing: the trees decide


def test_segment_references_see_the_segments_evaluated_before_them() -> None:
    trees: list[Any] = [
        {"attribute": "plan", "op": "is", "value": "pro"},
        {"all": [{"segment": "w0"}, {"attribute": "seats", "op": "gt", "value": 10}]},
        {"none": [{"segment": "w1"}, {"segment": "beta"}]},
        {"any": [{"segment": "w2"}, {"attribute": "email", "op": "regex", "value": "@a\\."}]},
        # refers to a later segment: evaluated after it (dependency order)
        {"all": [{"segment": "w5"}, {"attribute": "plan", "op": "not", "value": "pro"}]},
        {"attribute": "seats", "op": "lt", "value": 50},
        {"tag": {"key": "team", "value": "red"}},
        {"attribute": "plan", "op": "is", "value": "pro"},  # repeated leaf: memoized
    ]
    env = _environment(trees, {"plan": "string", "seats": "number", "email": "string"})
    subjects = []
    for n in range(60):
        attributes = {"plan": ["pro", "free", None][n % 3], "seats": n, "email": f"{n}@a.io"}
        subject = _subject(n, attributes)
        subject.tags = frozenset({("team", "red")} if n % 4 == 0 else ())
        subjects.append(subject)
    for manual in (set(), {2}):
        answers = _agree(env, subjects, manual)
        assert any(103 in a for a in answers)
        assert any(102 in a for a in answers) == (not manual)  # beta members are not in w2
        assert all((104 in a) == (105 in a and 100 not in a) for a in answers)


def test_the_closure_fallback_gives_the_same_answers() -> None:
    trees = world_segments(20, 0.4, seed=5)
    types = {name: infer_type(value) or "string" for name, value in user_traits(0).items()}
    segments = [(100 + i, parse_condition(t, types)) for i, t in enumerate(trees)]
    generated, fallback = compile_segments(segments, types), _closures(segments, types, None)
    for n in range(200):
        a: set[int] = {1}
        b: set[int] = {1}
        generated(_subject(n, user_traits(n, seed=4)), NOW, a)
        fallback(_subject(n, user_traits(n, seed=4)), NOW, b)
        assert a == b


@settings(max_examples=300, deadline=None)
@given(pattern=regexes(), text=st.text(ALPHABET, max_size=12))
def test_regex_found_is_search_found(pattern: str, text: str) -> None:
    try:
        regex = compile_regex(pattern)
    except ValueError:
        assume(False)
        raise
    assert regex.found(text) is (regex.search(text) is not None)
