"""Validation: one test per rule, each checking the JSON path the error points to."""

from __future__ import annotations

from typing import Any

import pytest

from shared.conditions import (
    ConditionError,
    compile_python,
    compile_sql,
    condition_to_json,
    parse_condition,
    referenced_segments,
)


def leaf(**fields: Any) -> dict[str, Any]:
    return {"attribute": "plan", "op": "is", "value": "pro", **fields}


def error_of(obj: Any, types: dict[str, str] | None = None) -> ConditionError:
    with pytest.raises(ConditionError) as caught:
        parse_condition(obj, types)
    err = caught.value
    assert str(err) == f"{err.path}: {err.message}"
    return err


INVALID: list[tuple[str, Any, dict[str, str] | None, str, str]] = [
    # (rule, condition, types, expected path, expected message fragment)
    ("not an object", [1], None, "$", "expected a condition object"),
    ("group not a list", {"all": {}}, None, "$.all", "expected a list"),
    ("two group keys", {"all": [], "any": []}, None, "$", "exactly one key"),
    ("unknown leaf", {"all": [{"foo": 1}]}, None, "$.all[0]", "expected all, any"),
    ("unknown key", {"any": [leaf(colour=1)]}, None, "$.any[0].colour", "unexpected key"),
    ("unknown op", {"all": [leaf(op="like")]}, None, "$.all[0].op", "unknown operator"),
    ("empty name", leaf(attribute=""), None, "$.attribute", "1 to 255"),
    ("long name", leaf(attribute="a" * 256), None, "$.attribute", "1 to 255"),
    ("bad scope", leaf(scope="team"), None, "$.scope", '"user" or "company"'),
    ("ci not bool", leaf(ci="yes"), None, "$.ci", "true or false"),
    ("missing value", {"attribute": "a", "op": "is"}, None, "$.value", "needs a value"),
    ("value for is_set", leaf(op="is_set"), None, "$.value", "takes no value"),
    ("list for is", leaf(value=["a"]), None, "$.value", "single value"),
    ("null for is", leaf(value=None), None, "$.value", "single value"),
    ("string too long", leaf(value="x" * 1001), None, "$.value", "1000 characters"),
    ("in not a list", leaf(op="in", value="a"), None, "$.value", "list of values"),
    ("in too long", leaf(op="in", value=["a"] * 1001), None, "$.value", "1000 values"),
    ("in mixed", leaf(op="in", value=["a", {}]), None, "$.value[1]", "expected a string"),
    (
        "declared number",
        {"all": [{}, {"any": [{"attribute": "seats", "op": "gte", "value": "many"}]}][1:]},
        {"seats": "number"},
        "$.all[0].any[0].value",
        'expected a number for attribute "seats" (number)',
    ),
    ("gt not a number", leaf(op="gt", value="many"), None, "$.value", "expected a number"),
    ("gt bool", leaf(op="gt", value=True), None, "$.value", "expected a number"),
    ("bad date", leaf(op="before", value="2024-02-30"), None, "$.value", "expected a datetime"),
    ("between shape", leaf(op="between", value=[1]), None, "$.value", "[lo, hi]"),
    ("between item", leaf(op="between", value=[1, "x"]), None, "$.value[1]", "expected a number"),
    ("days negative", leaf(op="within_last_days", value=-1), None, "$.value", "whole number"),
    ("days fraction", leaf(op="more_than_days_ago", value=1.5), None, "$.value", "whole number"),
    (
        "op not for type",
        leaf(op="contains", value="1"),
        {"plan": "number"},
        "$.op",
        'operator "contains" does not apply to attribute "plan" (number)',
    ),
    ("seen is datetime", leaf(attribute="last_seen_at"), None, "$.value", "expected a datetime"),
    ("regex backreference", leaf(op="regex", value=r"(a)\1"), None, "$.value", "escape"),
    ("regex lookahead", leaf(op="regex", value="a(?=b)"), None, "$.value", "lookaround"),
    ("regex lazy", leaf(op="regex", value="a+?"), None, "$.value", "two quantifiers"),
    ("regex flags", leaf(op="regex", value="(?i)a"), None, "$.value", "flags"),
    ("regex word boundary", leaf(op="regex", value=r"\bword"), None, "$.value", "escape"),
    ("regex unbalanced", leaf(op="regex", value="(a"), None, "$.value", "unclosed group"),
    ("regex too long", leaf(op="regex", value="a" * 201), None, "$.value", "200 characters"),
    ("regex big bound", leaf(op="regex", value="a{1000}"), None, "$.value", "at most 100"),
    ("regex nothing", leaf(op="regex", value="*a"), None, "$.value", "nothing to repeat"),
    ("regex ci", leaf(op="regex", value="a", ci=True), None, "$.ci", "ci does not apply"),
    ("tag shape", {"tag": "vip"}, None, "$.tag", '"key"'),
    ("tag extra", {"tag": {"key": "a"}, "x": 1}, None, "$.x", "unexpected key"),
    ("segment name", {"segment": ""}, None, "$.segment", "1 to 255"),
    ("event op", {"event": "e", "op": "in", "value": 1}, None, "$.op", "expected one of"),
    ("event count", {"event": "e", "op": "gte", "value": -1}, None, "$.value", "whole number"),
    (
        "event days",
        {"event": "e", "op": "is", "value": 0, "withinDays": "30"},
        None,
        "$.withinDays",
        "whole number",
    ),
    ("bucket range", {"bucket": {"seed": "s", "from": 0, "to": 101}}, None, "$.bucket.to", "0"),
    ("bucket order", {"bucket": {"seed": "s", "from": 50, "to": 10}}, None, "$.bucket.to", "less"),
    ("bucket seed", {"bucket": {"seed": 1, "from": 0, "to": 1}}, None, "$.bucket.seed", "string"),
]


@pytest.mark.parametrize(
    ("rule", "obj", "types", "path", "message"), INVALID, ids=[c[0] for c in INVALID]
)
def test_invalid_condition_names_the_node(
    rule: str, obj: Any, types: dict[str, str] | None, path: str, message: str
) -> None:
    err = error_of(obj, types)
    assert err.path == path
    assert message in err.message


def test_leaf_limit() -> None:
    ok = {"all": [leaf()] * 100}
    parse_condition(ok)
    err = error_of({"all": [leaf()] * 100 + [{"any": [leaf()]}]})
    assert err.path == "$.all[100].any[0]" and "100 leaves" in err.message


def test_depth_limit() -> None:
    tree: Any = leaf()
    for _ in range(9):
        tree = {"all": [tree]}
    parse_condition(tree)  # nine groups and a leaf: depth 10
    err = error_of({"any": [tree]})
    assert err.path == "$.any[0]" + ".all[0]" * 9 and "10 levels" in err.message


def test_round_trip_and_references() -> None:
    obj = {
        "all": [
            {"attribute": "plan", "op": "in", "value": ["pro", "enterprise"], "ci": True},
            {"attribute": "seats", "scope": "company", "op": "gte", "value": 50},
            {"segment": "paying-users"},
            {"any": [{"segment": 42}, {"tag": {"key": "Region", "value": "Europe"}}]},
            {"event": "Clicked Upgrade", "op": "between", "value": [1, 3], "withinDays": 30},
            {"bucket": {"seed": "new-onboarding", "from": 0, "to": 20}},
            {"none": [{"attribute": "email", "op": "is_set"}]},
        ]
    }
    cond = parse_condition(obj)
    assert condition_to_json(cond) == obj
    assert parse_condition(condition_to_json(cond)) == cond
    assert referenced_segments(cond) == {"paying-users", "42"}


def test_declared_types_change_the_comparison() -> None:
    cond = parse_condition({"attribute": "zip", "op": "is", "value": 1234})
    # untyped: the number 1234; declared string: the text "1234", so "01234" never equals it
    sql_untyped, params_untyped = compile_sql(cond)
    sql_typed, params_typed = compile_sql(cond, types={"zip": "string"})
    assert params_untyped[1] == 1234 and params_typed[1] == "1234"
    assert sql_untyped != sql_typed
    with pytest.raises(ConditionError):
        compile_python(cond, types={"zip": "list"})


def test_every_leaf_kind_compiles_in_both_engines() -> None:
    cond = parse_condition(
        {
            "all": [
                {"tag": {"key": "a"}},
                leaf(scope="company"),
                {"segment": "x"},
                {"event": "e", "op": "is", "value": 0, "withinDays": 7},
                {"bucket": {"seed": "s", "from": 0, "to": 10}},
            ]
        }
    )
    compile_python(cond, segments={"x": 1})
    sql, _ = compile_sql(cond, segments={"x": 1})
    assert sql.count("EXISTS") == 4
