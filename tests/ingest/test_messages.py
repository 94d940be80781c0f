"""shared.messages.normalise: the edge cases ingest relies on."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from shared.messages import (
    MAX_ID_LENGTH,
    Change,
    InboxMessage,
    MessageError,
    WireMessage,
    inbox_decoder,
    inbox_encoder,
    normalise,
    wire_decoder,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)


def wire(**fields: Any) -> WireMessage:
    return wire_decoder.decode(msgspec.json.encode(fields))


def norm(type_: str | None = "identify", **fields: Any) -> InboxMessage:
    return normalise(wire(**fields), NOW, type_)


@pytest.mark.parametrize(
    "value",
    ["undefined", "null", "None", "NaN", "0", "guest", "Anonymous", "[object Object]", "", "  ", 0],
)
def test_no_id_values_are_rejected(value: Any) -> None:
    with pytest.raises(MessageError) as err:
        norm(userId=value)
    assert err.value.field == "userId"
    with pytest.raises(MessageError) as err:
        norm(anonymousId=value)
    assert err.value.field == "anonymousId"


def test_numeric_ids_become_strings() -> None:
    assert norm(userId=12345).userId == "12345"
    assert norm(userId=7.0).userId == "7"
    assert norm(userId=1.5).userId == "1.5"


@pytest.mark.parametrize("value", [True, [1], {"a": 1}])
def test_ids_of_other_types_are_rejected(value: Any) -> None:
    with pytest.raises(MessageError) as err:
        norm(userId=value)
    assert err.value.field == "userId"


def test_id_length_limit() -> None:
    assert norm(userId="x" * MAX_ID_LENGTH).userId == "x" * MAX_ID_LENGTH
    with pytest.raises(MessageError, match="longer than 255"):
        norm(userId="x" * (MAX_ID_LENGTH + 1))
    with pytest.raises(MessageError) as err:
        norm(userId="u", messageId="m" * (MAX_ID_LENGTH + 1))
    assert err.value.field == "messageId"


def test_a_message_needs_some_id() -> None:
    with pytest.raises(MessageError) as err:
        norm(traits={"a": 1})
    assert err.value.field == "userId"


def test_change_objects() -> None:
    msg = norm(
        userId="u",
        traits={
            "a": {"set": 1},
            "b": {"set_once": "x"},
            "c": {"unset": True},
            "d": {"add": 2.5},
            "e": {"subtract": 1},
            "f": {"append": "one"},
            "g": {"prepend": ["x", "y"]},
            "h": {"remove": [1, True]},
            "i": {"set": None},
            "j": None,
        },
    )
    assert msg.attributes == {
        "a": Change("set", 1),
        "b": Change("set_once", "x"),
        "c": Change("unset"),
        "d": Change("add", 2.5),
        "e": Change("subtract", 1),
        "f": Change("append", ["one"]),
        "g": Change("prepend", ["x", "y"]),
        "h": Change("remove", ["1", "true"]),
        "i": Change("unset"),
        "j": Change("unset"),
    }


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ({"unset": False}, "unset"),
        ({"add": "1"}, "number"),
        ({"subtract": True}, "number"),
        ({"append": [{"x": 1}]}, "list of strings"),
    ],
)
def test_bad_change_objects_name_the_attribute(value: Any, words: str) -> None:
    with pytest.raises(MessageError, match=words) as err:
        norm(userId="u", traits={"score": value})
    assert err.value.field == "traits.score"


def test_nested_objects_flatten_and_change_objects_nest() -> None:
    msg = norm(
        userId="u",
        attributes={
            "address": {"city": "Paris", "geo": {"lat": 1, "lng": 2}},
            "counters": {"logins": {"add": 1}},
            "empty": {},
            # an object with one key that is not an operator is plain nesting
            "settings": {"theme": "dark"},
            "list": [1, {"a": 2}],
        },
    )
    assert msg.attributes == {
        "address.city": Change("set", "Paris"),
        "address.geo.lat": Change("set", 1),
        "address.geo.lng": Change("set", 2),
        "counters.logins": Change("add", 1),
        "empty": Change("unset"),
        "settings.theme": Change("set", "dark"),
        "list": Change("set", [1, {"a": 2}]),
    }


def test_attributes_win_over_traits_and_name_the_field() -> None:
    msg = norm(userId="u", traits={"a": 1, "b": 1}, attributes={"b": 2})
    assert msg.attributes == {"a": Change("set", 1), "b": Change("set", 2)}
    with pytest.raises(MessageError) as err:
        norm(userId="u", attributes={"n": {"add": "x"}})
    assert err.value.field == "attributes.n"


def test_attribute_name_length() -> None:
    with pytest.raises(MessageError, match="attribute names"):
        norm(userId="u", traits={"a" * 256: 1})
    with pytest.raises(MessageError, match="attribute names"):
        norm(userId="u", traits={"a" * 200: {"b" * 60: 1}})


@pytest.mark.parametrize("kind", ["Identify", "TRACK", "page"])
def test_types_are_case_insensitive(kind: str) -> None:
    msg = norm(None, type=kind, userId="u", event="E")
    assert msg.type == kind.lower()


@pytest.mark.parametrize("kind", [None, "", "teleport", "batch", "reset"])
def test_unknown_or_missing_types_are_rejected(kind: str | None) -> None:
    with pytest.raises(MessageError) as err:
        norm(None, type=kind, userId="u")
    assert err.value.field == "type"


def test_track_only_keeps_properties_and_identify_only_attributes() -> None:
    track = norm("track", userId="u", event="E", traits={"a": 1}, properties={"p": {"q": 1}})
    assert track.attributes == {}
    assert track.properties == {"p": {"q": 1}}  # properties are not flattened
    identify = norm("identify", userId="u", event="E", properties={"p": 1})
    assert identify.properties == {}
    assert identify.event is None


def test_segment_operations() -> None:
    assert norm(userId="u", segments=["~", "a", "~b", "~*"]).segments == ["~", "a", "~b", "~*"]
    for bad in ([""], ["~x", "k" * 256]):
        with pytest.raises(MessageError) as err:
            norm(userId="u", segments=bad)
        assert err.value.field.startswith("segments[")
    with pytest.raises(MessageError, match="more than 100"):
        norm(userId="u", segments=["a"] * 101)


def test_timestamps() -> None:
    assert norm(userId="u").timestamp == NOW_MS
    assert norm(userId="u", timestamp="2024-05-01T11:00:00Z").timestamp == NOW_MS - 3_600_000
    skewed = norm(userId="u", timestamp="1999-01-01T00:00:00Z", sentAt="1999-01-01T00:00:30Z")
    assert skewed.timestamp == NOW_MS - 30_000
    assert skewed.receivedAt == NOW_MS
    naive = norm(userId="u", timestamp="2024-05-01T11:00:00")
    assert naive.timestamp == NOW_MS - 3_600_000


def test_message_ids_are_generated_when_missing() -> None:
    first, second = norm(userId="u"), norm(userId="u", messageId="  ")
    assert first.messageId.startswith("gen-")
    assert first.messageId != second.messageId


def test_inbox_encoding_round_trips() -> None:
    msg = norm("group", userId="u", groupId="g", traits={"a": {"add": 1}}, membership={"r": 1})
    assert inbox_decoder.decode(inbox_encoder.encode(msg)) == msg
