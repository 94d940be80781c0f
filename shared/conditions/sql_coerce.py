"""Coercion of jsonb values to attribute types, the SQL half: twins of
:mod:`shared.conditions.coerce`, written as SQL expressions over a jsonb expression ``v``.

Each yields NULL when the value is missing or unreadable, and never raises on bad data: every
cast sits behind a ``jsonb_typeof`` or regex guard inside a CASE (PostgreSQL evaluates a CASE
branch only when its condition holds, for non-constant input). ``v`` is only ever a column
reference or ``u.attributes -> $n::text``; no user text is formatted into the SQL.

ISO datetime strings are parsed once per write, not per query: ``users.epochs`` and
``companies.epochs`` hold ``{name: epoch microseconds}`` for every attribute whose value is an
ISO string, filled by a trigger (migration 004) calling ``segments_iso_epochs``, whose body
:func:`iso_epochs_body` gives from the same rule (shared.migrate keeps the database's equal).
"""

from __future__ import annotations

from shared.conditions.coerce import DATETIME_PATTERN, EPOCH_MS_FROM, NUMERIC_MAX_LEN
from shared.conditions.coerce import NUMERIC_PATTERN as _NUMERIC_PATTERN

# Case folding identical to Python's str.lower() (see coerce.fold), whatever the database's
# own collation; COLLATE "C" afterwards so comparisons of the folded text are bytewise. Text
# that is all ASCII (as many bytes as characters) is folded by the "C" collation, which maps
# A-Z only, as Python does for ASCII: twice cheaper than ICU (collation segments_fold,
# migration 007), which folds the rest.
# ``ascii`` is the text tested for ASCII, ``text`` the text folded: the same expression, or
# (fold_stored_text) a cheaper one equal to it wherever ``text`` is not NULL.
FOLD = (
    'CASE WHEN octet_length({ascii}) = length({ascii}) THEN lower(({text}) COLLATE "C") '
    'ELSE lower(({text}) COLLATE segments_fold) COLLATE "C" END'
)
_SCALAR = "('string', 'number', 'boolean')"

for _pattern in (_NUMERIC_PATTERN, DATETIME_PATTERN):
    assert "'" not in _pattern  # constants, written into the SQL text as literals


def fold(expr: str) -> str:
    """``expr`` (text) case-folded the way coerce.fold does."""
    return f"({FOLD.format(ascii=expr, text=expr)})"


def fold_stored_text(v: str, raw: str) -> str:
    """:func:`fold` of ``as_text(v)``, where ``raw`` is the same value read as ``->>`` (its
    text whatever its JSON type). The ASCII test reads ``raw``, one cheap operator, instead of
    evaluating ``as_text(v)`` twice more: equal whenever ``as_text(v)`` is not NULL, and
    when it is NULL either branch folds NULL. PostgreSQL does not share common expressions,
    so this halves what a case-insensitive string leaf costs per row."""
    return f"({FOLD.format(ascii=raw, text=as_text(v))})"


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


# The function that fills the ``epochs`` columns; migration 004 declares it and shared.migrate
# gives it this header and the body below.
ISO_EPOCHS_FUNCTION = "segments_iso_epochs(jsonb)"
ISO_EPOCHS_HEADER = (
    "segments_iso_epochs(attrs jsonb) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE STRICT"
)

# PL/pgSQL, not one SQL expression: each field is read once into a variable (an expression
# repeats every sub-expression it uses), and a SQL function sets up executor state for the
# whole expression on every call; together 2-3 times the cost a write (measured: ~45 against
# ~18 µs a user of bench.preview's data).
# The shape is checked with ``~`` (PostgreSQL's regex engine is fast at yes/no, ~100 times
# slower at capturing groups), then the fields are read at their fixed positions: date 1-10,
# hour 12-13, minute 15-16, ``:`` and seconds 17-19, ``.``/``,`` and fraction from 20, and the
# zone (``Z`` or ``+HH[[:]MM]``) is what remains after the time's digits.
_ISO_EPOCHS_BODY = f"""
DECLARE
    k text; s text; tz text; digits text; parsed jsonb := '{{}}';
    yr int; mon int; dd int; hh int; mi int; ss int; off_h int; off_m int;
BEGIN
    FOR k, s IN
        SELECT key, value #>> '{{}}' FROM jsonb_each(attrs)
        WHERE jsonb_typeof(value) = 'string' AND value #>> '{{}}' ~ '{DATETIME_PATTERN}'
    LOOP
        yr := substr(s, 1, 4)::int;
        mon := substr(s, 6, 2)::int;
        dd := substr(s, 9, 2)::int;
        hh := CASE WHEN length(s) > 10 THEN substr(s, 12, 2)::int ELSE 0 END;
        mi := CASE WHEN length(s) > 10 THEN substr(s, 15, 2)::int ELSE 0 END;
        ss := CASE WHEN substr(s, 17, 1) = ':' THEN substr(s, 18, 2)::int ELSE 0 END;
        tz := CASE WHEN length(s) > 10 THEN ltrim(substr(s, 17), '0123456789:.,') ELSE '' END;
        digits := replace(substr(tz, 2), ':', '');
        off_h := CASE WHEN tz IN ('', 'Z', 'z') THEN 0 ELSE left(digits, 2)::int END;
        off_m := CASE WHEN length(digits) = 4 THEN right(digits, 2)::int ELSE 0 END;
        CONTINUE WHEN yr < 1 OR mon NOT BETWEEN 1 AND 12 OR hh > 23 OR mi > 59 OR ss > 59
            OR off_h > 23 OR off_m > 59 OR dd NOT BETWEEN 1 AND CASE
                WHEN mon IN (4, 6, 9, 11) THEN 30
                WHEN mon <> 2 THEN 31
                WHEN (yr % 4 = 0 AND yr % 100 <> 0) OR yr % 400 = 0 THEN 29
                ELSE 28 END;
        parsed := parsed || jsonb_build_object(k, (
            (make_date(yr, mon, dd) - DATE '1970-01-01')::numeric * 86400
            + hh * 3600 + mi * 60 + ss
            - CASE WHEN left(tz, 1) = '-' THEN -1 ELSE 1 END * (off_h * 60 + off_m) * 60
        ) * 1000000 + CASE WHEN substr(s, 17, 1) = ':' AND substr(s, 20, 1) IN ('.', ',')
            THEN rpad(left(substr(s, 21, length(s) - 20 - length(tz)), 6), 6, '0')::int
            ELSE 0 END);
    END LOOP;
    RETURN parsed;
END
"""


def iso_epochs_body() -> str:
    """The body of ``segments_iso_epochs(attrs jsonb)``: ``{name: epoch microseconds}`` (JSON
    numbers) for every attribute of ``attrs`` whose value is a string that coerce.iso_us
    reads (DATETIME_PATTERN, and a possible date and time); other attributes are absent."""
    return _ISO_EPOCHS_BODY


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
