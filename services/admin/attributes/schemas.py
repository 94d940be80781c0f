"""Attribute type bodies (msgspec Structs, camelCase on the wire)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

AttrType = Literal["string", "number", "boolean", "datetime", "list"]


class AttributeTypeUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """``PUT /v1/attributes/{scope}/{name}``: declare or correct the attribute's type."""

    type: AttrType


class AttributeInfo(msgspec.Struct, kw_only=True):
    """An attribute: its type, whether a person declared it (else inferred from the first
    value seen), and how many ingestion warnings it has."""

    name: str
    scope: str
    type: str
    declared: bool
    warnings: int


class AttributeList(msgspec.Struct):
    attributes: list[AttributeInfo]


class AttributeTypeChange(msgspec.Struct, kw_only=True):
    """The attribute after a PUT, and the keys of the segments being recomputed for it."""

    attribute: AttributeInfo
    recomputing: list[str]


class AttributeWarning(msgspec.Struct, kw_only=True):
    id: str
    messageId: str
    userId: str | None
    warning: str
    at: datetime


class WarningPage(msgspec.Struct):
    """Newest first; pass ``nextCursor`` back as ``cursor`` (None on the last page)."""

    warnings: list[AttributeWarning]
    nextCursor: str | None


update_decoder = msgspec.json.Decoder(AttributeTypeUpdate)
