"""Key rotation bodies (msgspec Structs, camelCase on the wire)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from msgspec import Meta

#: Longest grace period a rotation may give the old key: 30 days.
MAX_GRACE = 30 * 24 * 3600
DEFAULT_GRACE = 24 * 3600


class KeyRotate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/keys/{write|secret}/rotate``: how long the old key keeps working (seconds;
    0 revokes it at once)."""

    graceSeconds: Annotated[int, Meta(ge=0, le=MAX_GRACE)] = DEFAULT_GRACE


class RetiringKey(msgspec.Struct, kw_only=True):
    """A key a rotation replaced, still accepted until ``validUntil``."""

    kind: str
    validUntil: datetime


class Keys(msgspec.Struct, kw_only=True):
    """The environment's keys: the write key (public), and the retired keys still accepted.
    The secret key is never shown again after it was created or rotated."""

    writeKey: str
    retiring: list[RetiringKey]


class RotatedKey(msgspec.Struct, kw_only=True):
    """The new key (a secret key is shown this once) and until when the old one works."""

    kind: str
    key: str
    previousKeyValidUntil: datetime | None


rotate_decoder = msgspec.json.Decoder(KeyRotate)
