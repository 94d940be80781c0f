"""Coercion of jsonb values to attribute types, the SQL half: twins of
:mod:`shared.conditions.coerce`, written as SQL expressions over a jsonb expression ``v``.

Each yields NULL when the value is missing or unreadable, and never raises on bad data: every
cast sits behind a ``jsonb_typeof`` or regex guard inside a CASE (PostgreSQL evaluates a CASE
branch only when its condition holds, for non-constant input). ``v`` is only ever a column
reference or ``u.attributes -> $n::text``; no user text is formatted into the SQL.

ISO datetime strings are parsed once per write, not per query: ``users.epochs`` and
``companies.epochs`` hold ``{name: epoch microseconds}`` for every attribute whose value is an
ISO string, filled by a trigger (migration 004) calling the function :data:`ISO_EPOCHS_HEADER`
whose body :func:`iso_epochs_body` generates from the same rule (shared.migrate keeps it so).
"""

from __future__ import annotations

from shared.conditions.coerce import DATETIME_PATTERN, EPOCH_MS_FROM, NUMERIC_MAX_LEN
from shared.conditions.coerce import NUMERIC_PATTERN as _NUMERIC_PATTERN

# Case folding identical to Python's str.lower() (see coerce.fold), whatever the database's
# own collation; COLLATE "C" afterwards so comparisons of the folded text are bytewise.
FOLD = 'lower(({}) COLLATE "und-x-icu") COLLATE "C"'
_SCALAR = "('string', 'number', 'boolean')"

for _pattern in (_NUMERIC_PATTERN, DATETIME_PATTERN):
    assert "'" not in _pattern  # constants, written into the SQL text as literals


def fold(expr: str) -> str:
    """``expr`` (text) case-folded the way coerce.fold does."""
    return FOLD.format(expr)


def as_text(v: str) -> str:
    """jsonb -> text: strings as they are, numbers and booleans as their JSON text."""
    return f"CASE WHEN jsonb_typeof({v}) IN {_SCALAR} THEN ({v}) #>> '{{}}' END"


def _numeric_string(s: str) -> str:
    return (
        f"CASE WHEN length({s}) <= {NUMERIC_MAX_LEN} AND ({s}) ~ '{_NUMERIC_PATTERN}' "
        f"THEN ({s})::numeric END"
    )


def as_number(v: str) -> str:
    """jsonb -> numeric: numbers, and numeric strings."""
    s = f"(({v}) #>> '{{}}')"
    return (
        f"CASE jsonb_typeof({v}) WHEN 'number' THEN ({v})::numeric "
        f"WHEN 'string' THEN {_numeric_string(s)} END"
    )


def as_boolean(v: str) -> str:
    """jsonb -> boolean: booleans, and "true" / "false" in any case."""
    s = f"(({v}) #>> '{{}}')"
    return (
        f"CASE jsonb_typeof({v}) WHEN 'boolean' THEN ({v})::boolean "
        f"WHEN 'string' THEN CASE {fold(s)} WHEN 'true' THEN true WHEN 'false' THEN false END "
        "END"
    )


def _iso_us(s: str) -> str:
    """Epoch microseconds of the text ``s`` when it matches DATETIME_PATTERN (NULL when it
    does not, or names an impossible date or time).

    The shape is checked with ``~`` (PostgreSQL's regex engine is fast at yes/no, ~100 times
    slower at capturing groups), then the fields are read at their fixed positions: date
    1-10, hour 12-13, minute 15-16, ``:`` and seconds 17-19, ``.``/``,`` and fraction from 20,
    and the zone (``Z`` or ``+HH[[:]MM]``) is what remains after the time's digits."""
    zone = f"CASE WHEN length({s}) > 10 THEN ltrim(substr({s}, 17), '0123456789:.,') ELSE '' END"
    has_seconds = f"substr({s}, 17, 1) = ':'"
    offset_digits = f"replace(substr({zone}, 2), ':', '')"

    def field(start: int, when: str = "true") -> str:
        return f"CASE WHEN {when} THEN substr({s}, {start}, 2)::int ELSE 0 END"

    year, month, day = f"substr({s}, 1, 4)::int", f"substr({s}, 6, 2)::int", field(9)
    hour, minute = field(12, f"length({s}) > 10"), field(15, f"length({s}) > 10")
    second = field(18, has_seconds)
    off_h = f"CASE WHEN {zone} IN ('', 'Z', 'z') THEN 0 ELSE left({offset_digits}, 2)::int END"
    off_m = f"CASE WHEN length({offset_digits}) = 4 THEN right({offset_digits}, 2)::int ELSE 0 END"
    sign = f"CASE WHEN left({zone}, 1) = '-' THEN -1 ELSE 1 END"
    fraction = (
        f"CASE WHEN {has_seconds} AND substr({s}, 20, 1) IN ('.', ',') "
        f"THEN rpad(left(substr({s}, 21, length({s}) - 20 - length({zone})), 6), 6, '0')::int "
        "ELSE 0 END"
    )
    leap = f"(({year} % 4 = 0 AND {year} % 100 <> 0) OR {year} % 400 = 0)"
    days_in_month = (
        f"CASE WHEN {month} IN (4, 6, 9, 11) THEN 30 "
        f"WHEN {month} = 2 THEN CASE WHEN {leap} THEN 29 ELSE 28 END ELSE 31 END"
    )
    valid = (
        f"{year} >= 1 AND {month} BETWEEN 1 AND 12 "
        f"AND {day} BETWEEN 1 AND {days_in_month} AND {hour} <= 23 AND {minute} <= 59 "
        f"AND {second} <= 59 AND {off_h} <= 23 AND {off_m} <= 59"
    )
    seconds = (
        f"(make_date({year}, {month}, {day}) - DATE '1970-01-01')::numeric * 86400 "
        f"+ {hour} * 3600 + {minute} * 60 + {second} - {sign} * ({off_h} * 60 + {off_m}) * 60"
    )
    # nested CASEs: the fields are only read (cast) once the shape is known to be right
    return (
        f"CASE WHEN {s} ~ '{DATETIME_PATTERN}' THEN "
        f"CASE WHEN {valid} THEN ({seconds}) * 1000000 + {fraction} END END"
    )


def as_epoch_us(v: str, parsed: str) -> str:
    """jsonb -> epoch microseconds (numeric): epoch numbers (seconds below 10^11, else
    milliseconds), floored to whole microseconds, and ISO strings, read from ``parsed``: the
    value's entry in its row's ``epochs`` (``u.epochs -> $n::text``), already parsed."""
    n = f"({v})::numeric"
    return (
        f"CASE jsonb_typeof({v}) "
        f"WHEN 'number' THEN CASE WHEN {n} < {EPOCH_MS_FROM} THEN floor({n} * 1000000) "
        f"ELSE floor({n} * 1000) END "
        f"WHEN 'string' THEN ({parsed})::numeric END"
    )


# The function that fills the ``epochs`` columns; migration 004 declares it (with this header)
# and shared.migrate gives it the body below.
ISO_EPOCHS_FUNCTION = "segments_iso_epochs(jsonb)"
ISO_EPOCHS_HEADER = (
    "segments_iso_epochs(attrs jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT"
)


def iso_epochs_body() -> str:
    """The body of ``segments_iso_epochs(attrs jsonb)``: ``{name: epoch microseconds}`` (JSON
    numbers) for every attribute of ``attrs`` whose value is a string that :func:`_iso_us`
    reads; other attributes are absent.

    ``OFFSET 0`` keeps each sub-select from being merged into the one above: merged, the
    dozens of references the ISO expression makes to ``s`` would each re-extract the value."""
    return (
        "SELECT coalesce(jsonb_object_agg(parsed.key, parsed.us), '{}') FROM ("
        f"SELECT strings.key, {_iso_us('strings.s')} AS us FROM ("
        "SELECT key, value #>> '{}' AS s FROM jsonb_each(attrs) "
        "WHERE jsonb_typeof(value) = 'string' OFFSET 0) AS strings OFFSET 0) AS parsed "
        "WHERE parsed.us IS NOT NULL"
    )


def column_epoch_us(column: str) -> str:
    """A timestamptz column as epoch microseconds (numeric)."""
    return f"floor(extract(epoch FROM {column}) * 1000000)"


def as_list(v: str, ci: bool) -> str:
    """jsonb -> text[]: the scalar elements of an array as text (folded when ``ci``)."""
    element = "e #>> '{}'"
    if ci:
        element = fold(element)
    return (
        f"CASE WHEN jsonb_typeof({v}) = 'array' THEN ARRAY(SELECT {element} "
        f"FROM jsonb_array_elements({v}) AS e WHERE jsonb_typeof(e) IN {_SCALAR}) END"
    )
