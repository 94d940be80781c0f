"""Preview, explain and users-list bodies (msgspec Structs, camelCase on the wire)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec


class PreviewRequest(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /v1/segments/preview``: an unsaved condition."""

    conditions: Any


class UserSummary(msgspec.Struct, kw_only=True):
    """A user in a preview sample or a users-list page (``userId`` None: anonymous)."""

    userId: str | None
    attributes: dict[str, Any]
    firstSeenAt: datetime
    lastSeenAt: datetime


class Preview(msgspec.Struct):
    """How many users the condition matches now, and up to 20 of them (oldest first).
    ``estimated``: the environment is large, and ``count`` was extrapolated from a random
    sample of its users (standard error about 2 % of the count for a condition matching 1 %
    of them, 0.7 % at 10 %)."""

    count: int
    sample: list[UserSummary]
    estimated: bool = False


class UserPage(msgspec.Struct):
    """One page of users; pass ``nextCursor`` back as ``cursor`` (None on the last page)."""

    users: list[UserSummary]
    nextCursor: str | None


class SegmentRef(msgspec.Struct):
    id: str
    key: str
    kind: str


class Explanation(msgspec.Struct, kw_only=True):
    """``GET /v1/segments/{segment}/explain/{userId}``. ``member``: the stored membership;
    ``result``: the conditions evaluated now (they differ while a recompute is pending);
    ``explanation``: the annotated tree (None for manual and all-users segments, whose
    membership ``reason`` explains)."""

    segment: SegmentRef
    userId: str
    member: bool
    result: bool
    explanation: Any
    reason: str


preview_decoder = msgspec.json.Decoder(PreviewRequest)
