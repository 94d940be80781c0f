"""Coercion of jsonb values to attribute types, the SQL half: twins of
:mod:`shared.conditions.coerce`, written as SQL expressions over a jsonb expression ``v``.

Each yields NULL when the value is missing or unreadable, and never raises on bad data: every
cast sits behind a ``jsonb_typeof`` or regex guard inside a CASE (PostgreSQL evaluates a CASE
branch only when its condition holds, for non-constant input). ``v`` is only ever a column
reference or ``u.attributes -> $n::text``; no user text is formatted into the SQL.
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


def _iso_us(m: str) -> str:
    """Epoch microseconds from the captures ``m`` of DATETIME_PATTERN (NULL if invalid)."""

    def part(i: int) -> str:
        return f"coalesce({m}[{i}]::int, 0)"

    year, month, day = f"{m}[1]::int", f"{m}[2]::int", f"{m}[3]::int"
    leap = f"(({year} % 4 = 0 AND {year} % 100 <> 0) OR {year} % 400 = 0)"
    days_in_month = (
        f"CASE WHEN {month} IN (4, 6, 9, 11) THEN 30 "
        f"WHEN {month} = 2 THEN CASE WHEN {leap} THEN 29 ELSE 28 END ELSE 31 END"
    )
    valid = (
        f"{m} IS NOT NULL AND {year} >= 1 AND {month} BETWEEN 1 AND 12 "
        f"AND {day} BETWEEN 1 AND {days_in_month} AND {part(4)} <= 23 AND {part(5)} <= 59 "
        f"AND {part(6)} <= 59 AND {part(10)} <= 23 AND {part(11)} <= 59"
    )
    offset = f"(CASE WHEN {m}[9] = '-' THEN -1 ELSE 1 END) * ({part(10)} * 60 + {part(11)}) * 60"
    seconds = (
        f"(make_date({year}, {month}, {day}) - DATE '1970-01-01')::numeric * 86400 "
        f"+ {part(4)} * 3600 + {part(5)} * 60 + {part(6)} - {offset}"
    )
    frac = f"coalesce(rpad({m}[7], 6, '0')::int, 0)"
    return f"CASE WHEN {valid} THEN ({seconds}) * 1000000 + {frac} END"


def as_epoch_us(v: str) -> str:
    """jsonb -> epoch microseconds (numeric): ISO strings, and epoch numbers (seconds below
    10^11, else milliseconds), floored to whole microseconds."""
    n = f"({v})::numeric"
    return (
        f"CASE jsonb_typeof({v}) "
        f"WHEN 'number' THEN CASE WHEN {n} < {EPOCH_MS_FROM} THEN floor({n} * 1000000) "
        f"ELSE floor({n} * 1000) END "
        f"WHEN 'string' THEN (SELECT {_iso_us('r.m')} "
        f"FROM regexp_match(({v}) #>> '{{}}', '{DATETIME_PATTERN}') AS r(m)) END"
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
