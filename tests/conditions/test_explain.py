"""explain(): the tree with results at every node and coerced actual values at the leaves."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from shared.conditions import ConditionError, Subject, compile_python, explain, parse_condition
from tests.conditions.conftest import FIRST_SEEN, LAST_SEEN, NOW

TODAY = (date(2024, 3, 2) - date(1970, 1, 1)).days

SUBJECT = Subject(
    1,
    "u1",
    {"plan": "Pro", "seats": "42", "signed_up": 1709251200, "roles": ["a", 5]},
    FIRST_SEEN,
    LAST_SEEN,
    tags=frozenset({("Department", "Sales"), ("Department", "Ops"), ("Location", "Dallas")}),
    companies=({"size": 10}, {"size": "big"}, {}),
    segments=frozenset({7}),
    events={"Clicked": {TODAY: 2, TODAY - 40: 5}},
)


def test_explain_annotates_every_node() -> None:
    obj: dict[str, Any] = {
        "all": [
            {"attribute": "plan", "op": "is", "value": "pro", "ci": True},
            {"attribute": "seats", "op": "gt", "value": 40},
            {"attribute": "signed_up", "op": "on", "value": "2024-03-01"},
            {"attribute": "first_seen_at", "op": "before", "value": "2024-02-01"},
            {"attribute": "missing", "op": "is_not_set"},
            {"attribute": "size", "scope": "company", "op": "gte", "value": 5},
            {"any": [{"tag": {"key": "Department", "value": "Eng"}}, {"segment": "paying"}]},
            {"none": [{"event": "Clicked", "op": "gte", "value": 3, "withinDays": 30}]},
            {"bucket": {"seed": "s", "from": 0, "to": 100}},
        ]
    }
    cond = parse_condition(obj)
    out = explain(cond, SUBJECT, NOW, segments={"paying": 7})
    assert out["result"] is True
    assert out["result"] == compile_python(cond, segments={"paying": 7})(SUBJECT, NOW)
    leaves = out["all"]
    assert leaves[0] == {**obj["all"][0], "result": True, "type": "string", "actual": "Pro"}
    assert leaves[1]["actual"] == 42 and leaves[1]["type"] == "number"
    assert leaves[2]["actual"] == "2024-03-01T00:00:00Z" and leaves[2]["result"] is True
    assert leaves[3]["actual"] == "2024-01-15T08:30:00Z"
    assert leaves[4] == {**obj["all"][4], "result": True, "type": None, "actual": None}
    assert leaves[5]["actual"] == [10, None, None] and leaves[5]["result"] is True
    tag, segment = leaves[6]["any"]
    assert tag["result"] is False and tag["actual"] == ["Ops", "Sales"]
    assert segment == {"segment": "paying", "result": True}
    assert leaves[6]["result"] is True
    event = leaves[7]["none"][0]
    assert event["actual"] == 2 and event["result"] is False and leaves[7]["result"] is True
    assert 0 <= leaves[8]["actual"] < 100


def test_explain_shows_false_results_and_decimals() -> None:
    cond = parse_condition(
        {
            "any": [
                {"attribute": "seats", "op": "lt", "value": 1.5},
                {"attribute": "x", "op": "is_set"},
            ]
        }
    )
    out = explain(cond, SUBJECT, NOW, types={"x": "list"})
    assert out["result"] is False
    assert out["any"][0]["actual"] == 42
    assert out["any"][1]["type"] == "list"  # re-resolved against the declared type
    other = Subject(2, None, {"seats": 1.25}, FIRST_SEEN, LAST_SEEN)
    out = explain(parse_condition({"attribute": "seats", "op": "lt", "value": 1.5}), other, NOW)
    assert out["actual"] == 1.25 and out["result"] is True
    assert isinstance(out["actual"], float) and not isinstance(out["actual"], Decimal)


def test_explain_unknown_segment_is_an_error() -> None:
    with pytest.raises(ConditionError) as caught:
        explain(parse_condition({"all": [{"segment": "nope"}]}), SUBJECT, NOW, segments={})
    assert caught.value.path == "$.all[0].segment"
