"""Segment request and response bodies (msgspec Structs, camelCase on the wire)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

Name = Annotated[str, Meta(min_length=1, max_length=200)]
#: Keys name segments in the API, in CSV files and in ingest's ``"segments": ["beta", "~beta"]``.
Key = Annotated[str, Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")]
Description = Annotated[str, Meta(max_length=2000)]


class SegmentCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/segments``. ``key`` is derived from ``name`` when omitted."""

    name: Name
    kind: Literal["dynamic", "manual"]
    key: Key | None = None
    description: Description = ""
    conditions: Any = None


class SegmentUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``PATCH /v1/segments/{segment}``: only the fields present change. ``kind`` may be sent
    but must equal the current kind."""

    name: Name | UnsetType = UNSET
    key: Key | UnsetType = UNSET
    description: Description | UnsetType = UNSET
    conditions: Any = UNSET
    kind: str | UnsetType = UNSET


class Progress(msgspec.Struct, kw_only=True):
    """How far the bulk recompute of a computing segment has gone: ``queued`` (waiting for a
    worker), ``selecting`` (starting), ``writing`` (chunk by chunk: evaluating, writing the
    changes, refreshing Redis); ``percent`` of the whole run."""

    phase: str
    percent: int


class Segment(msgspec.Struct, kw_only=True):
    """A segment as the admin API shows it. ``progress`` is None unless ``status`` is
    ``computing``; ``statusReason`` says why a ``failed`` recompute failed."""

    id: str
    key: str
    name: str
    description: str
    kind: str
    conditions: Any
    status: str
    version: int
    memberCount: int
    progress: Progress | None = None
    statusReason: str | None = None
    createdAt: datetime
    updatedAt: datetime


class SegmentList(msgspec.Struct):
    segments: list[Segment]


class MembersPage(msgspec.Struct):
    """One page of a segment's members. ``userIds`` holds each member's userId (an anonymous
    profile is listed by its first anonymous id); ``nextCursor`` is None on the last page."""

    userIds: list[str]
    nextCursor: str | None


create_decoder = msgspec.json.Decoder(SegmentCreate)
update_decoder = msgspec.json.Decoder(SegmentUpdate)
