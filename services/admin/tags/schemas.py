"""Tag request and response bodies (msgspec Structs, camelCase on the wire)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from msgspec import UNSET, Meta, UnsetType

#: Tag keys and values: what identify's ``"tags": ["Key:Value"]`` accepts too.
TagPart = Annotated[str, Meta(min_length=1, max_length=255)]


class TagCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/tags``. ``autoSegment``: also create the dynamic segment "Key: Value" of the
    users carrying the tag."""

    key: TagPart
    value: TagPart
    autoSegment: bool = False


class TagUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``PATCH /v1/tags/{id}``: rename (key and/or value); ``autoSegment: true`` creates the
    auto-segment when the tag has none."""

    key: TagPart | UnsetType = UNSET
    value: TagPart | UnsetType = UNSET
    autoSegment: bool | UnsetType = UNSET


class Tag(msgspec.Struct, kw_only=True):
    """A tag as the admin API shows it. ``segmentId``/``segmentKey``: its auto-segment, if any."""

    id: str
    key: str
    value: str
    userCount: int
    segmentId: str | None
    segmentKey: str | None
    createdAt: datetime


class TagList(msgspec.Struct):
    tags: list[Tag]


class TagUsersChange(msgspec.Struct, kw_only=True):
    """The answer to ``POST``/``DELETE /v1/tags/{id}/users``: how many users really gained
    (``attached``) or lost (``detached``) the tag, userIds created as new users (attaching
    only), and what matched nobody."""

    attached: int = 0
    detached: int = 0
    created: list[str] = []
    unknownUserIds: list[str] = []
    unknownEmails: list[str] = []


class TagUsersPage(msgspec.Struct):
    """One page of the users carrying a tag (see ``MembersPage``)."""

    userIds: list[str]
    nextCursor: str | None


create_decoder = msgspec.json.Decoder(TagCreate)
update_decoder = msgspec.json.Decoder(TagUpdate)
