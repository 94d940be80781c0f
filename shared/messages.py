"""Ingest messages: the Segment-compatible wire format and the normalised form kept in the inbox.

Ingest decodes what clients send into :class:`WireMessage`, validates and normalises it with
:func:`normalise` into an :class:`InboxMessage` (ids checked, timestamps corrected, attributes
flattened into dotted names, every attribute value turned into a :class:`Change`), and stores
that encoded in the inbox. The worker decodes the same bytes with :data:`inbox_decoder`.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

MessageType = Literal["identify", "group", "track", "alias", "page", "screen"]
MESSAGE_TYPES: frozenset[str] = frozenset(("identify", "group", "track", "alias", "page", "screen"))

#: Change operators an attribute value may carry instead of a plain value.
CHANGE_OPS: frozenset[str] = frozenset(
    ("set", "set_once", "unset", "add", "subtract", "append", "prepend", "remove")
)
#: Attributes the system keeps itself; incoming values are ignored (with a warning).
SYSTEM_ATTRIBUTES: frozenset[str] = frozenset(("first_seen_at", "last_seen_at"))

MAX_MESSAGE_BYTES = 32 * 1024
MAX_REQUEST_BYTES = 500 * 1024
MAX_BATCH_MESSAGES = 2500
MAX_ID_LENGTH = 255
MAX_ATTRIBUTE_NAME = 255
MAX_ATTRIBUTES = 1000
MAX_SEGMENT_OPS = 100
#: Earliest timestamp a message may carry after clock-skew correction (0001-01-01, the
#: earliest that both Python and PostgreSQL represent); later than the receive time is clamped.
MIN_TIMESTAMP_MS = -62_135_596_800_000

# Ids that broken clients send when they have none; never made into a shared user.
_NO_ID = frozenset(
    ("null", "undefined", "none", "nan", "0", "guest", "anonymous", "[object object]")
)


class MessageError(ValueError):
    """A message that cannot be accepted; ``field`` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class WireMessage(msgspec.Struct, kw_only=True):
    """One message as a Segment (or usertour) client sends it. Unknown fields are ignored."""

    type: str | None = None
    userId: Any = None
    anonymousId: Any = None
    groupId: Any = None
    previousId: Any = None
    traits: dict[str, Any] | None = None
    attributes: dict[str, Any] | None = None
    membership: dict[str, Any] | None = None
    segments: list[str] | None = None
    tags: list[Any] | None = None
    event: str | None = None
    name: str | None = None
    category: str | None = None
    properties: dict[str, Any] | None = None
    timestamp: datetime | None = None
    sentAt: datetime | None = None
    messageId: str | None = None
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None
    writeKey: str | None = None
    identityToken: str | None = None


class Change(msgspec.Struct, array_like=True, frozen=True):
    """One attribute change: ``op`` is one of :data:`CHANGE_OPS`; a plain value is ``set``."""

    op: str
    value: Any = None


class TagOp(msgspec.Struct, array_like=True, frozen=True):
    """One tag operation: ``add`` / ``remove`` a key:value tag, ``remove_key`` (every value of
    ``key``) or ``clear`` (every tag)."""

    op: str
    key: str = ""
    value: str = ""


class InboxMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A validated, normalised message as stored in the inbox and applied by the worker."""

    type: str
    messageId: str
    #: epoch milliseconds, after Segment's clock-skew correction
    timestamp: int
    #: epoch milliseconds at which ingest received it
    receivedAt: int
    userId: str | None = None
    anonymousId: str | None = None
    groupId: str | None = None
    previousId: str | None = None
    #: flattened attribute name -> change. identify: the user's; group: the company's.
    attributes: dict[str, Change] = {}
    #: group only: the user's attributes within the company
    membership: dict[str, Change] = {}
    #: manual segment operations, in order ("key", "~key", "~", "~*")
    segments: list[str] = []
    #: identify / group: tag operations on the user, in order
    tags: list[TagOp] = []
    #: track: the event name; page / screen: "Page Viewed" / "Screen Viewed"
    event: str | None = None
    properties: dict[str, Any] = {}
    #: False for messages made by an import: applying them is not the user being seen, so
    #: first_seen_at / last_seen_at stay as they are (a new user starts at the timestamp)
    seen: bool = True


inbox_encoder = msgspec.msgpack.Encoder()
inbox_decoder = msgspec.msgpack.Decoder(InboxMessage)
wire_decoder = msgspec.json.Decoder(WireMessage)


def epoch_ms(moment: datetime) -> int:
    """Epoch milliseconds of ``moment``; a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def id_text(value: str | int | float) -> str:
    """An id as text: numbers as ingest stores them (``42``, ``42.0`` -> ``"42"``), so that
    every service finds the same user by a numeric id."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def normalise_id(field: str, value: Any) -> str | None:
    """An id as a string of 1-255 characters, or None when absent (JSON null).

    Numbers become strings; values that mean "no id" are rejected.
    """
    if value is None:
        return None
    if type(value) is str:  # the common case first (an import checks one a row)
        text = value
    else:
        if isinstance(value, bool):
            raise MessageError(field, "must be a string or a number, not a boolean")
        if isinstance(value, float) and not math.isfinite(value):
            raise MessageError(field, "must be a finite number")
        if not isinstance(value, str | int | float):
            raise MessageError(field, "must be a string or a number")
        text = id_text(value)
    stripped = text.strip()
    if not stripped or stripped.lower() in _NO_ID:
        raise MessageError(field, f"{text!r} is not a usable id")
    if len(text) > MAX_ID_LENGTH:
        raise MessageError(field, f"longer than {MAX_ID_LENGTH} characters")
    return text


def _string_list(field: str, value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    for item in items:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, bool):
            out.append("true" if item else "false")
        elif isinstance(item, int | float):
            out.append(msgspec.json.encode(item).decode())
        else:
            raise MessageError(field, "expected a string or a list of strings")
    return out


def parse_change(field: str, value: Any) -> Change | None:
    """``value`` as a :class:`Change` when it is a change object, else None."""
    if not (isinstance(value, dict) and len(value) == 1):
        return None
    ((op, arg),) = value.items()
    if op not in CHANGE_OPS:
        return None
    if op == "unset":
        if arg is not True:
            raise MessageError(field, '"unset" takes true')
        return Change("unset")
    if op in ("add", "subtract"):
        if isinstance(arg, bool) or not isinstance(arg, int | float):
            raise MessageError(field, f'"{op}" takes a number')
        return Change(op, arg)
    if op in ("append", "prepend", "remove"):
        return Change(op, _string_list(field, arg))
    if arg is None:  # {"set": null} means what null means: unset
        return Change("unset")
    return Change(op, arg)


def flatten_attributes(prefix_field: str, attributes: dict[str, Any]) -> dict[str, Change]:
    """Attribute values as changes, nested plain objects flattened into dotted names."""
    out: dict[str, Change] = {}

    def walk(prefix: str, obj: dict[str, Any]) -> None:
        for name, value in obj.items():
            full = f"{prefix}.{name}" if prefix else name
            field = f"{prefix_field}.{full}"
            if not full or len(full) > MAX_ATTRIBUTE_NAME:
                raise MessageError(field, f"attribute names are 1-{MAX_ATTRIBUTE_NAME} characters")
            change = parse_change(field, value)
            if change is not None:
                out[full] = change
            elif isinstance(value, dict):
                if not value:
                    out[full] = Change("unset")
                else:
                    walk(full, value)
            elif value is None:
                out[full] = Change("unset")
            else:
                out[full] = Change("set", value)
            if len(out) > MAX_ATTRIBUTES:
                raise MessageError(prefix_field, f"more than {MAX_ATTRIBUTES} attributes")

    walk("", attributes)
    return out


def _segment_ops(ops: list[str]) -> list[str]:
    if len(ops) > MAX_SEGMENT_OPS:
        raise MessageError("segments", f"more than {MAX_SEGMENT_OPS} operations")
    for i, op in enumerate(ops):
        key = op[1:] if op.startswith("~") else op
        if not isinstance(op, str) or (not key and op not in ("~", "~*")) or len(key) > 255:
            raise MessageError(f"segments[{i}]", f"{op!r} is not a segment operation")
    return ops


MAX_TAG_OPS = 100
MAX_TAG_PART = 255


def _tag_op(field: str, item: Any) -> TagOp:
    """A tag operation from ``"Key:Value"`` (add), ``"~Key:Value"`` (remove), ``"~Key"``
    (remove every value of Key), ``"~"`` (remove all), or an object
    ``{"key", "value", "remove"?: bool}`` for keys that contain ':'."""
    if isinstance(item, dict):
        key, value, remove = item.get("key"), item.get("value"), item.get("remove", False)
        if not isinstance(key, str) or not isinstance(remove, bool):
            raise MessageError(field, 'a tag object is {"key": str, "value": str, "remove"?: bool}')
        if value is None:
            if not remove:
                raise MessageError(f"{field}.value", "adding a tag needs a value")
            op = TagOp("remove_key", key)
        elif isinstance(value, str):
            op = TagOp("remove" if remove else "add", key, value)
        else:
            raise MessageError(f"{field}.value", "must be a string")
    elif isinstance(item, str):
        remove = item.startswith("~")
        text = item[1:] if remove else item
        if remove and text in ("", "*"):
            return TagOp("clear")
        key, sep, value = text.partition(":")
        key, value = key.strip(), value.strip()
        if not sep:
            if not remove:
                raise MessageError(field, f'{item!r}: a tag is "Key:Value"')
            op = TagOp("remove_key", key)
        else:
            op = TagOp("remove" if remove else "add", key, value)
    else:
        raise MessageError(field, 'a tag is "Key:Value", "~Key:Value", "~Key", "~" or an object')
    if not op.key or len(op.key) > MAX_TAG_PART or len(op.value) > MAX_TAG_PART:
        raise MessageError(field, f"tag keys and values are 1-{MAX_TAG_PART} characters")
    if op.op == "add" and not op.value:
        raise MessageError(field, "a tag needs a value")
    return op


def _tag_ops(items: list[Any]) -> list[TagOp]:
    if len(items) > MAX_TAG_OPS:
        raise MessageError("tags", f"more than {MAX_TAG_OPS} operations")
    return [_tag_op(f"tags[{i}]", item) for i, item in enumerate(items)]


def normalise(wire: WireMessage, received_at: datetime, type_: str | None = None) -> InboxMessage:
    """Validate a wire message and turn it into what the inbox stores.

    ``type_`` is the type implied by the endpoint (``/v1/identify``); in a batch it comes from
    the message's own ``type``. Raises :class:`MessageError` naming the offending field.
    """
    kind = (type_ or wire.type or "").lower()
    if kind not in MESSAGE_TYPES:
        raise MessageError("type", f"must be one of {', '.join(sorted(MESSAGE_TYPES))}")
    user_id = normalise_id("userId", wire.userId)
    anonymous_id = normalise_id("anonymousId", wire.anonymousId)
    if user_id is None and anonymous_id is None:
        raise MessageError("userId", "a message needs a userId or an anonymousId")

    received_ms = epoch_ms(received_at)
    if wire.timestamp is None:
        timestamp = received_ms
    elif wire.sentAt is not None:
        # Segment's clock-skew correction: the client's clock may be off, its durations are not.
        timestamp = received_ms - (epoch_ms(wire.sentAt) - epoch_ms(wire.timestamp))
    else:
        timestamp = epoch_ms(wire.timestamp)
    if timestamp < MIN_TIMESTAMP_MS:
        raise MessageError(
            "timestamp",
            "the timestamp (after clock-skew correction: receivedAt - (sentAt - timestamp)) "
            "falls before the year 1",
        )
    # A message from the future would lock its attributes against every later write.
    timestamp = min(timestamp, received_ms)

    message_id = wire.messageId
    if message_id is None or not message_id.strip():
        message_id = f"gen-{uuid.uuid4()}"
    elif len(message_id) > MAX_ID_LENGTH:
        raise MessageError("messageId", f"longer than {MAX_ID_LENGTH} characters")

    msg = InboxMessage(
        type=kind,
        messageId=message_id,
        timestamp=timestamp,
        receivedAt=received_ms,
        userId=user_id,
        anonymousId=anonymous_id,
    )
    if wire.traits is not None and wire.attributes is not None:
        source = {**wire.traits, **wire.attributes}
    else:
        source = wire.attributes if wire.attributes is not None else (wire.traits or {})
    attr_field = "attributes" if wire.attributes is not None else "traits"
    context_traits = (wire.context or {}).get("traits")
    if (
        kind == "identify"
        and wire.traits is None
        and wire.attributes is None
        and isinstance(context_traits, dict)
    ):
        # RudderStack's server SDKs (rudder-sdk-python 2.x) send identify traits only in
        # context.traits; RudderStack's own server reads them from there too
        source, attr_field = context_traits, "context.traits"

    if kind in ("identify", "group"):
        msg.attributes = flatten_attributes(attr_field, source)
        if wire.segments is not None:
            msg.segments = _segment_ops(wire.segments)
        if wire.tags is not None:
            msg.tags = _tag_ops(wire.tags)
    if kind == "group":
        group_id = normalise_id("groupId", wire.groupId)
        if group_id is None:
            raise MessageError("groupId", "a group message needs a groupId")
        if user_id is None:
            raise MessageError("userId", "a group message needs a userId")
        msg.groupId = group_id
        if wire.membership is not None:
            msg.membership = flatten_attributes("membership", wire.membership)
    elif kind == "track":
        if not wire.event or not wire.event.strip():
            raise MessageError("event", "a track message needs an event name")
        if len(wire.event) > MAX_ATTRIBUTE_NAME:
            raise MessageError("event", f"longer than {MAX_ATTRIBUTE_NAME} characters")
        msg.event = wire.event
        msg.properties = wire.properties or {}
    elif kind in ("page", "screen"):
        msg.event = "Page Viewed" if kind == "page" else "Screen Viewed"
        props = dict(wire.properties or {})
        if wire.name is not None:
            props.setdefault("name", wire.name)
        if wire.category is not None:
            props.setdefault("category", wire.category)
        msg.properties = props
    elif kind == "alias":
        previous = normalise_id("previousId", wire.previousId)
        if previous is None:
            raise MessageError("previousId", "an alias message needs a previousId")
        if user_id is None:
            raise MessageError("userId", "an alias message needs a userId")
        msg.previousId = previous
    return msg
