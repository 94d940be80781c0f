"""Webhook request and response bodies (msgspec Structs, camelCase on the wire)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

Url = Annotated[str, Meta(min_length=1, max_length=2000)]
EventName = Literal["entered", "exited"]
SegmentRef = str | int


class WebhookCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/webhooks``. ``segments``: keys or ids (omitted or null: every segment);
    ``events``: which changes to announce (default both)."""

    url: Url
    segments: list[SegmentRef] | None = None
    events: list[EventName] | None = None
    active: bool = True
    #: queue a segment.entered delivery (cause "sync") for every current member at once
    resync: bool = False


class WebhookUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``PATCH /v1/webhooks/{id}``: only the fields present change (``segments: null`` means
    every segment)."""

    url: Url | UnsetType = UNSET
    segments: list[SegmentRef] | UnsetType | None = UNSET
    events: list[EventName] | UnsetType = UNSET
    active: bool | UnsetType = UNSET


class SegmentSummary(msgspec.Struct):
    id: str
    key: str
    name: str


class Webhook(msgspec.Struct, kw_only=True):
    """A webhook as the admin API shows it. ``segments`` is None for "every segment" (a
    deleted segment drops out of the list). The signing secret is shown only when created
    or rotated."""

    id: str
    url: str
    segments: list[SegmentSummary] | None
    events: list[str]
    active: bool
    createdAt: datetime


class WebhookWithSecret(Webhook, kw_only=True):
    """A webhook with its signing secret: ``X-Segments-Signature`` is
    ``sha256=`` + hex HMAC-SHA256 of ``"<X-Segments-Timestamp>.<body>"`` under this secret."""

    secret: str


class WebhookList(msgspec.Struct):
    webhooks: list[Webhook]


class Delivery(msgspec.Struct, kw_only=True):
    """One delivery of one membership change to one webhook. ``status``: pending (waiting or
    being retried; ``nextAttemptAt`` says when), delivered (a 2xx came back) or failed (gave
    up). ``lastStatus``/``lastError``: the last attempt's HTTP status and error."""

    id: str
    changeId: str
    status: str
    attempts: int
    lastStatus: int | None
    lastError: str | None
    nextAttemptAt: datetime | None
    deliveredAt: datetime | None
    createdAt: datetime
    payload: Any


class DeliveriesPage(msgspec.Struct):
    """Newest first; ``nextCursor`` continues to older ones (None on the last page)."""

    deliveries: list[Delivery]
    nextCursor: str | None


create_decoder = msgspec.json.Decoder(WebhookCreate)
update_decoder = msgspec.json.Decoder(WebhookUpdate)
