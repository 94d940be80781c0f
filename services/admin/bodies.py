"""Request bodies decoded at the edge, with errors that name the offending field:
400 when the body is not JSON at all, 422 when it is JSON of the wrong shape."""

from __future__ import annotations

import re
from typing import TypeVar

import msgspec

from shared.http import ApiError

T = TypeVar("T")

_AT = re.compile(r"^(?P<msg>.*) - at `\$\.?(?P<field>[^`]*)`$")
_MISSING = re.compile(
    r"^Object missing required field `(?P<field>[^`]+)`(?: - at `\$\.?(?P<at>[^`]*)`)?$"
)
_UNKNOWN = re.compile(
    r"^Object contains unknown field `(?P<field>[^`]+)`(?: - at `\$\.?(?P<at>[^`]*)`)?$"
)


def _join(prefix: str | None, field: str) -> str:
    return f"{prefix}.{field}" if prefix else field


def validation_error(exc: msgspec.ValidationError) -> ApiError:
    """A 422 naming the field a msgspec validation error points at."""
    text = str(exc)
    if m := _MISSING.match(text):
        field = _join(m["at"], m["field"])
        return ApiError(422, f"{field}: required", field)
    if m := _UNKNOWN.match(text):
        field = _join(m["at"], m["field"])
        return ApiError(422, f"{field}: unknown field", field)
    if m := _AT.match(text):
        field = m["field"]
        return ApiError(422, f"{field}: {m['msg']}", field or None)
    return ApiError(422, f"invalid body: {text}")


def decode_body(decoder: msgspec.json.Decoder[T], raw: bytes) -> T:
    """``raw`` decoded by ``decoder``, or an :class:`ApiError` (400 not JSON, 422 bad shape)."""
    if not raw.strip():
        raise ApiError(400, "the request body is empty: send a JSON object")
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise validation_error(exc) from exc
    except msgspec.DecodeError as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from exc
