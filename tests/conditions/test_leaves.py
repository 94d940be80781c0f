"""Tag, company-scope, segment and event leaves, in both engines (``Profiles.matches`` asserts
that Python and SQL agree before the expected set is compared), with the missing / empty cases:
a user without tags, companies, memberships or events."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import pytest

from shared.conditions import ConditionError, compile_python, compile_sql, parse_condition
from tests.conditions.conftest import NOW, Profiles

TODAY = date(2024, 3, 2)  # NOW's UTC day


def days_ago(n: int) -> date:
    return TODAY - timedelta(days=n)


async def _tagged(profiles: Profiles) -> None:
    await profiles.add("none", {})
    await profiles.add(
        "sales_dallas", {}, tags=frozenset({("Department", "Sales"), ("Location", "Dallas")})
    )
    await profiles.add(
        "sales_paris", {}, tags=frozenset({("Department", "Sales"), ("Location", "Paris")})
    )
    await profiles.add("eng", {}, tags=frozenset({("Department", "Engineering")}))
    await profiles.add("case", {}, tags=frozenset({("department", "sales")}))
    await profiles.add("empty_value", {}, tags=frozenset({("Department", "")}))


TAG_CASES: list[tuple[Any, set[str]]] = [
    ({"tag": {"key": "Department", "value": "Sales"}}, {"sales_dallas", "sales_paris"}),
    ({"tag": {"key": "Department"}}, {"sales_dallas", "sales_paris", "eng", "empty_value"}),
    ({"tag": {"key": "Department", "value": ""}}, {"empty_value"}),
    ({"tag": {"key": "department", "value": "sales"}}, {"case"}),  # literal, case-sensitive
    ({"tag": {"key": "Nope"}}, set()),
    (
        {
            "all": [
                {"tag": {"key": "Department", "value": "Sales"}},
                {"tag": {"key": "Location", "value": "Dallas"}},
            ]
        },
        {"sales_dallas"},
    ),
    (
        {
            "all": [
                {"tag": {"key": "Department", "value": "Sales"}},
                {"none": [{"tag": {"key": "Location", "value": "Dallas"}}]},
            ]
        },
        {"sales_paris"},
    ),
    ({"none": [{"tag": {"key": "Department"}}]}, {"none", "case"}),
]


@pytest.mark.parametrize(("condition", "expected"), TAG_CASES)
async def test_tag_leaves(profiles: Profiles, condition: Any, expected: set[str]) -> None:
    await _tagged(profiles)
    assert await profiles.matches(condition) == expected


async def _companies(profiles: Profiles) -> None:
    await profiles.add("no_company", {"seats": 100})  # a user attribute, not a company's
    await profiles.add("small", {}, companies=({"seats": 10, "plan": "pro"},))
    await profiles.add("big", {}, companies=({"seats": "60", "plan": "Enterprise"},))
    await profiles.add(
        "both", {}, companies=({"seats": 5, "plan": "free"}, {"seats": 500, "plan": "pro"})
    )
    await profiles.add("unset", {}, companies=({},))
    await profiles.add("bad", {}, companies=({"seats": "many", "plan": None},))


COMPANY_CASES: list[tuple[Any, set[str]]] = [
    ({"op": "gte", "value": 50}, {"big", "both"}),
    ({"op": "lt", "value": 50}, {"small", "both"}),  # any company: "both" has one of each
    ({"op": "is_set"}, {"small", "big", "both", "bad"}),  # untyped: any value is set
    # negative ops hold when some company fails the positive one; no company, no match
    ({"op": "is_not_set"}, {"unset"}),
    ({"op": "not", "value": 10}, {"big", "both", "unset", "bad"}),
    ({"op": "between", "value": [5, 10]}, {"small", "both"}),
]


@pytest.mark.parametrize(("leaf", "expected"), COMPANY_CASES)
async def test_company_scope_leaves(profiles: Profiles, leaf: Any, expected: set[str]) -> None:
    await _companies(profiles)
    condition = {"attribute": "seats", "scope": "company", **leaf}
    assert await profiles.matches(condition) == expected


async def test_company_leaves_may_be_satisfied_by_different_companies(profiles: Profiles) -> None:
    await _companies(profiles)
    big_pro = {
        "all": [
            {"attribute": "seats", "scope": "company", "op": "gte", "value": 50},
            {"attribute": "plan", "scope": "company", "op": "is", "value": "free"},
        ]
    }
    assert await profiles.matches(big_pro) == {"both"}
    ci = {"attribute": "plan", "scope": "company", "op": "is", "value": "enterprise", "ci": True}
    assert await profiles.matches(ci) == {"big"}
    # a declared company type (keyed "company:<name>") changes the comparison
    as_text = {"attribute": "seats", "scope": "company", "op": "is", "value": "60"}
    assert await profiles.matches(as_text, types={"company:seats": "string"}) == {"big"}
    assert await profiles.matches(as_text, types={"company:seats": "number"}) == {"big"}
    # declared number: "many" is missing
    is_set = {"attribute": "seats", "scope": "company", "op": "is_set"}
    assert await profiles.matches(is_set, types={"company:seats": "number"}) == {
        "small",
        "big",
        "both",
    }
    in_user_scope = {"attribute": "seats", "op": "gte", "value": 50}
    assert await profiles.matches(in_user_scope) == {"no_company"}


async def test_company_scope_first_seen_at_is_a_company_attribute(profiles: Profiles) -> None:
    await profiles.add("user_only", {})
    await profiles.add("company_has_it", {}, companies=({"first_seen_at": "2020-01-01"},))
    condition = {
        "attribute": "first_seen_at",
        "scope": "company",
        "op": "before",
        "value": "2021-01-01",
    }
    assert await profiles.matches(condition) == {"company_has_it"}


async def test_segment_leaves(profiles: Profiles) -> None:
    paying = await profiles.segment("paying-users")
    await profiles.segment("beta")
    await profiles.add("none", {})
    await profiles.add("paying", {}, segments=frozenset({"paying-users"}))
    await profiles.add("both", {}, segments=frozenset({"paying-users", "beta"}))
    await profiles.add("beta", {}, segments=frozenset({"beta"}))
    assert await profiles.matches({"segment": "paying-users"}) == {"paying", "both"}
    assert await profiles.matches({"segment": paying}) == {"paying", "both"}
    assert await profiles.matches({"segment": str(paying)}) == {"paying", "both"}
    assert await profiles.matches({"none": [{"segment": "beta"}]}) == {"none", "paying"}
    assert await profiles.matches({"all": [{"segment": "beta"}, {"segment": "paying-users"}]}) == {
        "both"
    }


def test_unknown_segment_is_a_condition_error_naming_the_leaf() -> None:
    cond = parse_condition({"all": [{"attribute": "a", "op": "is_set"}, {"segment": "nope"}]})
    for compile_ in (compile_python, compile_sql):
        for segments in (None, {"other": 1, "1": 1}):
            with pytest.raises(ConditionError) as caught:
                compile_(cond, segments=segments)  # type: ignore[operator]
            assert caught.value.path == "$.all[1].segment"
            assert "nope" in caught.value.message


async def _events(profiles: Profiles) -> None:
    await profiles.add("never", {})
    await profiles.add("today_3", {}, events={"Clicked": {TODAY: 3}})
    await profiles.add(
        "spread",
        {},
        events={"Clicked": {TODAY: 1, days_ago(1): 1, days_ago(29): 1, days_ago(30): 5}},
    )
    await profiles.add("old", {}, events={"Clicked": {days_ago(400): 2}})
    await profiles.add("other_event", {}, events={"Viewed": {TODAY: 7}})
    await profiles.add("future", {}, events={"Clicked": {TODAY + timedelta(days=1): 1}})
    await profiles.add("zero_row", {}, events={"Clicked": {TODAY: 0}})


EVENT_CASES: list[tuple[Any, set[str]]] = [
    ({"op": "gte", "value": 1}, {"today_3", "spread", "old", "future"}),
    ({"op": "is", "value": 0}, {"never", "other_event", "zero_row"}),
    ({"op": "not", "value": 0}, {"today_3", "spread", "old", "future"}),
    ({"op": "is", "value": 8}, {"spread"}),
    ({"op": "lt", "value": 3}, {"never", "old", "other_event", "future", "zero_row"}),
    ({"op": "lte", "value": 3}, {"never", "today_3", "old", "other_event", "future", "zero_row"}),
    ({"op": "gt", "value": 3}, {"spread"}),
    ({"op": "between", "value": [2, 3]}, {"today_3", "old"}),
    ({"op": "between", "value": [0, 1]}, {"never", "other_event", "future", "zero_row"}),
    # withinDays N: the UTC days from today - N + 1 on (today counts as one day)
    ({"op": "gte", "value": 1, "withinDays": 1}, {"today_3", "spread", "future"}),
    ({"op": "is", "value": 2, "withinDays": 2}, {"spread"}),
    ({"op": "is", "value": 3, "withinDays": 30}, {"today_3", "spread"}),
    ({"op": "is", "value": 8, "withinDays": 31}, {"spread"}),
    (
        {"op": "is", "value": 0, "withinDays": 30},
        {"never", "old", "other_event", "zero_row"},
    ),
    ({"op": "between", "value": [1, 2], "withinDays": 365}, {"future"}),
]


@pytest.mark.parametrize(("leaf", "expected"), EVENT_CASES)
async def test_event_leaves(profiles: Profiles, leaf: Any, expected: set[str]) -> None:
    await _events(profiles)
    assert await profiles.matches({"event": "Clicked", **leaf}) == expected


async def test_event_window_follows_now_by_utc_day(profiles: Profiles) -> None:
    await _events(profiles)
    condition = {"event": "Clicked", "op": "gte", "value": 3, "withinDays": 1}
    assert await profiles.matches(condition) == {"today_3"}
    start_of_day = datetime(2024, 3, 2, 0, 0, tzinfo=NOW.tzinfo)
    assert await profiles.matches(condition, now=start_of_day) == {"today_3"}
    # one microsecond earlier it is yesterday: today's 3 events are "in the future" and count
    assert await profiles.matches(condition, now=start_of_day - timedelta(microseconds=1)) == {
        "today_3"
    }
    # a day later, today's events are yesterday's
    assert await profiles.matches(condition, now=NOW + timedelta(days=1)) == set()
    two_days = {"event": "Clicked", "op": "gte", "value": 3, "withinDays": 2}
    assert await profiles.matches(two_days, now=NOW + timedelta(days=1)) == {"today_3"}


def test_within_days_is_at_least_one() -> None:
    with pytest.raises(ConditionError) as caught:
        parse_condition({"event": "e", "op": "is", "value": 0, "withinDays": 0})
    assert caught.value.path == "$.withinDays"
