"""The orders the users list offers (``GET /v1/users?sort=``) and their keyset cursors.

``created`` (oldest first, the default) and ``-created`` page by the profile key;
``lastSeenAt`` and ``-lastSeenAt`` by (last_seen_at, key), the cursor carrying both
(``<epoch microseconds>.<key>``), so a page never skips or repeats a user whose neighbours
share a timestamp. Those orders lead with ``last_seen_day`` (the UTC day of last_seen_at,
indexed; migration 085): the same order, which PostgreSQL reads from the index a day at a
time, sorting only the days a page reaches instead of every user.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.http import ApiError

SORTS = ("created", "-created", "lastSeenAt", "-lastSeenAt")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BAD_CURSOR = "cursor: not a cursor this endpoint returned for this sort"


@dataclass(frozen=True, slots=True)
class UserOrder:
    by_time: bool  # last_seen_at, else the profile key
    descending: bool

    @property
    def order_by(self) -> str:
        way = "DESC" if self.descending else "ASC"
        if not self.by_time:
            return f"u.id {way}"
        return f"u.last_seen_day {way}, u.last_seen_at {way}, u.id {way}"

    def after(self, cursor: str | None, first_param: int) -> tuple[str, list[Any]]:
        """The keyset condition continuing after ``cursor`` (None: the first page), with
        its parameters from ``$first_param``."""
        op = "<" if self.descending else ">"
        p = first_param
        if not self.by_time:
            start = 2**63 - 1 if self.descending else 0
            return f"u.id {op} ${p}", [start if cursor is None else _key(cursor)]
        if cursor is None:
            return "true", []
        micros, _, key = cursor.partition(".")
        if not (_digits(micros, signed=True) and _digits(key)):
            raise ApiError(400, _BAD_CURSOR, "cursor")
        try:
            moment = _EPOCH + timedelta(microseconds=int(micros))
        except OverflowError:
            raise ApiError(400, _BAD_CURSOR, "cursor") from None
        # the day bound is implied by the pair; it is there for the index
        return (
            f"u.last_seen_day {op}= (${p}::timestamptz AT TIME ZONE 'UTC')::date"
            f" AND (u.last_seen_at, u.id) {op} (${p}, ${p + 1})",
            [moment, int(key)],
        )

    def cursor_of(self, last_seen_at: datetime, pk: int) -> str:
        if not self.by_time:
            return str(pk)
        delta = last_seen_at - _EPOCH
        micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        return f"{micros}.{pk}"


def parse_sort(raw: str | None) -> UserOrder:
    """The order ``sort`` names (default ``created``); 400 naming ``sort`` otherwise."""
    value = raw or "created"
    if value not in SORTS:
        raise ApiError(400, f"sort: one of {', '.join(SORTS)}", "sort")
    return UserOrder(by_time=value.lstrip("-") == "lastSeenAt", descending=value.startswith("-"))


def _digits(text: str, *, signed: bool = False) -> bool:
    body = text[1:] if signed and text.startswith("-") else text
    return body.isascii() and body.isdigit() and len(body) < 19


def _key(cursor: str) -> int:
    if not _digits(cursor):
        raise ApiError(400, _BAD_CURSOR, "cursor")
    return int(cursor)
