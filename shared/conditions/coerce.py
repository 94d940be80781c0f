"""Coercion of JSON values to attribute types, the Python half.

Every rule here has a twin in :mod:`shared.conditions.sql_coerce`; the two must agree for every
JSON value, which the property tests check on a real PostgreSQL. Representations:

- string   -> ``str``; numbers and booleans become their JSON text *as PostgreSQL prints the
  stored jsonb number* (``1e20`` -> ``"100000000000000000000"``), the text SQL's ``->>`` yields.
- number   -> ``int`` or ``Decimal`` (exact, like PostgreSQL ``numeric``); a float is read
  through its shortest repr, which is the text stored in jsonb.
- boolean  -> ``bool``; strings "true"/"false" in any case.
- datetime -> ``int`` epoch microseconds (floored), so comparisons are integer comparisons and
  there is no time-zone or range trouble; epoch numbers are seconds below 10^11, else ms.
- list     -> ``list[str]``: the scalar elements of a JSON array as strings (others ignored).

``None`` means missing: absent, JSON null, or unreadable as the type.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

# Numeric strings: JSON-like numbers, at most 100 characters and a 3-digit exponent, so that
# PostgreSQL's ``::numeric`` can never raise on them.
NUMERIC_PATTERN = r"^-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]{1,3})?$"
NUMERIC_MAX_LEN = 100
# ISO-8601 subset: YYYY-MM-DD, optionally [T ]HH:MM[:SS[.frac]] and Z or +HH[[:]MM].
# Groups: 1 year, 2 month, 3 day, 4 hour, 5 minute, 6 second, 7 fraction, 8 Z, 9 sign,
# 10 offset hours, 11 offset minutes. Written so that Python ``re`` and PostgreSQL ARE agree.
DATETIME_PATTERN = (
    r"^([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[Tt ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:[.,]([0-9]+))?)?"
    r"(?:([Zz])|([+-])([0-9]{2})(?::?([0-9]{2}))?)?)?$"
)
EPOCH_MS_FROM = 10**11  # epoch numbers at or above this are milliseconds
US_PER_DAY = 86_400_000_000

_NUMERIC = re.compile(NUMERIC_PATTERN)
_DATETIME = re.compile(DATETIME_PATTERN)
_EPOCH_DAY = date(1970, 1, 1).toordinal()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def fold(text: str) -> str:
    """Case folding for ``ci: true``: full Unicode lowercase, the same mapping as
    PostgreSQL's ``lower(x COLLATE segments_fold)``, ICU's root locale (migration 007),
    checked for every code point by a test."""
    return text.lower()


def float_text(value: float) -> str | None:
    """The text PostgreSQL prints for the jsonb number written from ``value``."""
    if not math.isfinite(value):
        return None
    exact = Decimal(repr(value))
    if exact == 0:
        exact = abs(exact)  # numeric has no negative zero
    return format(exact, "f")


def to_text(value: Any) -> str | None:
    """A stored JSON value as a string, or None when it has no string reading."""
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        # str() refuses ints of more than 4300 digits; Decimal formats any int exactly
        return str(value) if -(10**18) < value < 10**18 else format(Decimal(value), "f")
    if kind is float:
        return float_text(value)
    return None


def numeric_string(text: str) -> Decimal | None:
    """A numeric string as an exact Decimal, or None."""
    if len(text) <= NUMERIC_MAX_LEN and _NUMERIC.fullmatch(text):
        return Decimal(text)
    return None


def to_number(value: Any) -> int | Decimal | None:
    """A stored JSON value as an exact number, or None."""
    kind = type(value)
    if kind is int:
        return value  # type: ignore[no-any-return]
    if kind is float:
        return Decimal(repr(value)) if math.isfinite(value) else None
    if kind is str:
        return numeric_string(value)
    return None


def to_bool(value: Any) -> bool | None:
    """A stored JSON value as a boolean, or None."""
    kind = type(value)
    if kind is bool:
        return value  # type: ignore[no-any-return]
    if kind is str and len(value) in (4, 5):
        low = value.lower()
        if low == "true":
            return True
        if low == "false":
            return False
    return None


def _floor_scaled(number: int | Decimal, power: int) -> int:
    """floor(number * 10**power), exactly."""
    if isinstance(number, int):
        return int(number * 10**power)
    sign, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)
    mantissa = int("".join(map(str, digits)) or "0") * (-1 if sign else 1)
    shift = exponent + power
    return int(mantissa * 10**shift if shift >= 0 else mantissa // 10**-shift)


def epoch_number_us(number: int | Decimal) -> int:
    """An epoch number (seconds below 10^11, else milliseconds) as epoch microseconds."""
    return _floor_scaled(number, 6 if number < EPOCH_MS_FROM else 3)


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        return 29 if (year % 4 == 0 and year % 100 != 0) or year % 400 == 0 else 28
    return 30 if month in (4, 6, 9, 11) else 31


def iso_us(text: str) -> int | None:
    """An ISO-8601 date or datetime (naive means UTC) as epoch microseconds, or None."""
    m = _DATETIME.fullmatch(text)
    if m is None:
        return None
    year, month, day = int(m[1]), int(m[2]), int(m[3])
    if year < 1 or not 1 <= month <= 12 or not 1 <= day <= _days_in_month(year, month):
        return None
    hour = int(m[4] or 0)
    minute = int(m[5] or 0)
    second = int(m[6] or 0)
    off_h = int(m[10] or 0)
    off_m = int(m[11] or 0)
    if hour > 23 or minute > 59 or second > 59 or off_h > 23 or off_m > 59:
        return None
    frac_us = int((m[7] or "").ljust(6, "0")[:6])
    offset = (off_h * 60 + off_m) * (-1 if m[9] == "-" else 1)
    days = date(year, month, day).toordinal() - _EPOCH_DAY
    seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset * 60
    return seconds * 1_000_000 + frac_us


def to_epoch_us(value: Any) -> int | None:
    """A stored JSON value as epoch microseconds, or None."""
    kind = type(value)
    if kind is str:
        return iso_us(value)
    if kind is int or kind is float:
        number = to_number(value)
        return None if number is None else epoch_number_us(number)
    return None


def datetime_us(moment: datetime) -> int:
    """A Python datetime (naive means UTC) as epoch microseconds."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _ONE_US


_ONE_US = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - _EPOCH


def to_list(value: Any) -> list[str] | None:
    """A stored JSON array as its scalar elements' strings, or None when not an array."""
    if type(value) is not list:
        return None
    out = []
    for element in value:
        text = to_text(element)
        if text is not None:
            out.append(text)
    return out
