"""Identity verification settings (msgspec Structs, camelCase on the wire)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from msgspec import Meta

#: Longest grace period a rotation may give the previous secret: 30 days.
MAX_GRACE = 30 * 24 * 3600


class IdentityVerification(msgspec.Struct, kw_only=True):
    """``GET /v1/identity-verification``: whether write-key requests must carry an identity
    token, and the secret's state (the secret itself is only shown when it is created)."""

    enabled: bool
    secretSet: bool
    #: until when tokens signed with the secret a rotation replaced still verify
    previousSecretValidUntil: datetime | None
    #: tokens without ``exp`` are refused once their ``iat`` is older than this
    tokenMaxAgeSeconds: float


class IdentityVerificationUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``PUT /v1/identity-verification``: turn it on or off. Turning it on without a secret
    creates one (returned once, in ``secret``)."""

    enabled: bool


class IdentitySecretRotate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/identity-verification/rotate-secret``: how long the previous secret keeps
    verifying tokens (seconds; default: the token maximum age, so every token minted before
    the rotation lives out its life; 0 ends it at once)."""

    graceSeconds: Annotated[int, Meta(ge=0, le=MAX_GRACE)] | None = None


class IdentitySecret(msgspec.Struct, kw_only=True):
    """A new identity secret, shown this once, and the settings after the change."""

    secret: str
    settings: IdentityVerification


class IdentityVerificationChanged(msgspec.Struct, kw_only=True):
    """The settings after a change; ``secret`` only when the change created one."""

    settings: IdentityVerification
    secret: str | None = None


update_decoder = msgspec.json.Decoder(IdentityVerificationUpdate)
rotate_decoder = msgspec.json.Decoder(IdentitySecretRotate)
