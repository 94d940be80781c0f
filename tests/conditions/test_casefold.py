"""``ci: true`` folds text identically in both engines, for every Unicode code point.

Python folds with ``str.lower()``; SQL with ``lower(x COLLATE segments_fold)``, ICU's root
locale (migration 007), whatever the database's own collation (a C-locale database would fold
ASCII only). Without ICU (the embedded development database) migration 007 falls back to the
C library's C.UTF-8: the conditions run there, and the tests below would not hold."""

from __future__ import annotations

import asyncpg

from shared.conditions.coerce import fold
from shared.conditions.sql_coerce import fold as sql_fold

CODE_POINTS = [i for i in range(1, 0x110000) if not 0xD800 <= i <= 0xDFFF]  # no surrogates


async def test_the_fold_collation_is_icu_where_the_tests_run(db: asyncpg.Pool) -> None:
    provider = await db.fetchval(
        "SELECT collprovider::text FROM pg_collation WHERE collname = 'segments_fold'"
    )
    assert provider == "i"


async def test_every_code_point_folds_the_same(db: asyncpg.Pool) -> None:
    # one aggregated string first (fast); per code point only to name the differences
    folded_sql = await db.fetchval(
        f"""SELECT string_agg({sql_fold("chr(i)")}, '' ORDER BY i)
            FROM unnest($1::int[]) AS i""",
        CODE_POINTS,
    )
    if folded_sql != "".join(fold(chr(i)) for i in CODE_POINTS):
        rows = await db.fetch(
            f"SELECT i, {sql_fold('chr(i)')} AS f FROM unnest($1::int[]) AS i", CODE_POINTS
        )
        differ = [(r["i"], r["f"], fold(chr(r["i"]))) for r in rows if r["f"] != fold(chr(r["i"]))]
        raise AssertionError(f"{len(differ)} code points fold differently: {differ[:20]}")


async def test_context_dependent_folding_agrees(db: asyncpg.Pool) -> None:
    samples = ["ΣΑΣ", "ΟΔΟΣ ΟΔΟΣ.", "Σ", "AΣ B", "İstanbul", "ẞTRASSE", "ǅemal", "ᾼΣ"]
    folded = await db.fetch(f"SELECT s, {sql_fold('s')} AS f FROM unnest($1::text[]) AS s", samples)
    assert {r["s"]: r["f"] for r in folded} == {s: fold(s) for s in samples}
