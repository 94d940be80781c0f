"""The profile merge rules (shared/profiles.py), case by case."""

from __future__ import annotations

from typing import Any

from shared.messages import Change
from shared.profiles import apply_changes, apply_segment_ops, merge_attributes


def run(
    attrs: dict[str, Any], ts: dict[str, int], changes: dict[str, Change], at: int
) -> list[tuple[str, str]]:
    return apply_changes(attrs, ts, changes, at)


def test_set_records_timestamp_and_older_set_is_ignored() -> None:
    attrs: dict[str, Any] = {}
    ts: dict[str, int] = {}
    run(attrs, ts, {"plan": Change("set", "pro")}, 200)
    run(attrs, ts, {"plan": Change("set", "free")}, 100)
    assert attrs == {"plan": "pro"}
    assert ts == {"plan": 200}
    run(attrs, ts, {"plan": Change("set", "enterprise")}, 200)
    assert attrs["plan"] == "enterprise"  # equal timestamps: the later-applied one wins


def test_unset_is_ordered_too() -> None:
    attrs: dict[str, Any] = {"plan": "pro"}
    ts = {"plan": 100}
    run(attrs, ts, {"plan": Change("unset")}, 50)
    assert attrs == {"plan": "pro"}
    run(attrs, ts, {"plan": Change("unset")}, 150)
    assert attrs == {}
    run(attrs, ts, {"plan": Change("set", "late")}, 120)  # older than the unset
    assert attrs == {}


def test_set_once_only_when_missing_or_null() -> None:
    attrs: dict[str, Any] = {"a": None}
    ts: dict[str, int] = {}
    run(attrs, ts, {"a": Change("set_once", 1), "b": Change("set_once", 2)}, 10)
    run(attrs, ts, {"a": Change("set_once", 9), "b": Change("set_once", 9)}, 20)
    assert attrs == {"a": 1, "b": 2}


def test_add_subtract_commute_and_reject_non_numbers() -> None:
    attrs: dict[str, Any] = {"name": "x"}
    ts: dict[str, int] = {}
    run(attrs, ts, {"n": Change("add", 5)}, 300)
    run(attrs, ts, {"n": Change("subtract", 2)}, 100)  # older, still applies
    warnings = run(attrs, ts, {"name": Change("add", 1), "m": Change("add", 1.5)}, 50)
    assert attrs == {"name": "x", "n": 3, "m": 1.5}
    assert [w[0] for w in warnings] == ["name"]
    assert run(attrs, {}, {"flag": Change("add", 1)}, 1) == []
    attrs["t"] = True
    assert [w[0] for w in run(attrs, {}, {"t": Change("add", 1)}, 1)] == ["t"]


def test_append_prepend_remove_keep_distinct_strings() -> None:
    attrs: dict[str, Any] = {}
    ts: dict[str, int] = {}
    run(attrs, ts, {"tags": Change("append", ["a", "b", "a"])}, 1)
    run(attrs, ts, {"tags": Change("append", ["b", "c"])}, 2)
    run(attrs, ts, {"tags": Change("prepend", ["z", "a"])}, 3)
    assert attrs["tags"] == ["z", "a", "b", "c"]
    run(attrs, ts, {"tags": Change("remove", ["a", "q"])}, 4)
    assert attrs["tags"] == ["z", "b", "c"]
    attrs["s"] = "scalar"
    assert [w[0] for w in run(attrs, ts, {"s": Change("append", ["x"])}, 5)] == ["s"]


def test_system_attributes_are_ignored_with_a_warning() -> None:
    attrs: dict[str, Any] = {}
    warnings = run(attrs, {}, {"last_seen_at": Change("set", "2020-01-01")}, 1)
    assert attrs == {}
    assert warnings and warnings[0][0] == "last_seen_at"


def test_merge_keeps_identified_values() -> None:
    into: dict[str, Any] = {"plan": "pro", "empty": None}
    into_ts = {"plan": 10}
    merge_attributes(into, into_ts, {"plan": "free", "lang": "fr", "empty": 1}, {"lang": 5})
    assert into == {"plan": "pro", "lang": "fr", "empty": 1}
    assert into_ts == {"plan": 10, "lang": 5}


def test_segment_ops_apply_in_order() -> None:
    manual = {"a", "b", "c"}
    assert apply_segment_ops({"c"}, ["~", "a", "b"], manual) == {"a", "b"}
    assert apply_segment_ops({"a", "b"}, ["~a", "unknown"], manual) == {"b"}
    assert apply_segment_ops({"a"}, ["b", "~*"], manual) == set()
    assert apply_segment_ops(set(), ["a", "~a", "a"], manual) == {"a"}
