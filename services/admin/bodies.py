"""Request bodies decoded at the edge, with errors that name the offending field:
400 when the body is not JSON at all, 422 when it is JSON of the wrong shape or breaks a rule
of :mod:`shared.json_guard` (see :func:`shared.http.decode_json`)."""

from __future__ import annotations

from typing import TypeVar

import msgspec

from shared.http import decode_json

T = TypeVar("T")


def decode_body(decoder: msgspec.json.Decoder[T], raw: bytes) -> T:
    """``raw`` decoded by ``decoder``, or an :class:`ApiError` (400 not JSON, 422 bad shape)."""
    return decode_json(decoder, raw)
