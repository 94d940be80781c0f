"""The regex subset means the same in RE2 (Python engine) and PostgreSQL ``~`` (SQL engine):
a table of known differences between the two dialects, and a property over random patterns
from the accepted grammar and random texts, both run on the real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.conditions.regex import compile_regex
from shared.settings import Settings

TEXTS = ["", "a", "a\nb", "ab", "a\vb", "a\tb", "é", "٣", "_", "A1", "a\n", "x.y", "a{2}"]
TEXTS += ["Σας", "aaa", "[a]", "a-b", "\\", "a b", "\r\n"]
PATTERNS = [
    "a.b", "^a$", "a$", "^$", "\\s", "\\S", "\\w", "\\W", "\\d", "\\D", "[^a]", "[\\d_]", "a|",
    "(a|)b", "a{2}", "a{1,}", "a{0,1}b", "\\.", "[a-c]+", "[\\]a]", "[\\-a]", "[\\^]", "\\\\",
    "\\{", "é|Σ", "[Σ-ς]", "\\n", "\\v", "(?:ab)*$", "^(a)(b)?", "[\\s]", "\\[a\\]",
]  # fmt: skip


@pytest.fixture(scope="module")
def pg(settings: Settings) -> Iterator[tuple[asyncio.AbstractEventLoop, asyncpg.Connection]]:
    assert settings.database_url is not None
    loop = asyncio.new_event_loop()
    conn = loop.run_until_complete(asyncpg.connect(settings.database_url))
    yield loop, conn
    loop.run_until_complete(conn.close())
    loop.close()


def pg_matches(
    pg: tuple[asyncio.AbstractEventLoop, asyncpg.Connection], pattern: str, texts: list[str]
) -> list[bool]:
    loop, conn = pg
    rows = loop.run_until_complete(
        conn.fetch(
            'SELECT t COLLATE "C" ~ $1::text AS m FROM unnest($2::text[]) WITH ORDINALITY AS '
            "x(t, n) ORDER BY n",
            pattern,
            texts,
        )
    )
    return [r["m"] for r in rows]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_known_dialect_differences_are_neutralised(
    pg: tuple[asyncio.AbstractEventLoop, asyncpg.Connection], pattern: str
) -> None:
    compiled = compile_regex(pattern)
    in_python = [compiled.search(t) is not None for t in TEXTS]
    assert in_python == pg_matches(pg, compiled.pg, TEXTS)


def test_examples_mean_what_they_say() -> None:
    assert compile_regex("a.b").search("a\nb")  # dot matches newlines
    assert not compile_regex("\\s").search("\v")  # \s is ASCII space, \t \n \f \r
    assert not compile_regex("\\w").search("é")  # \w is ASCII
    assert not compile_regex("a$").search("a\n")  # $ is the end of the text only
    assert compile_regex("b").search("abc")  # search, not full match


ATOMS = ["a", "b", "Σ", ".", "\\d", "\\w", "\\s", "\\S", "\\W", "\\D", "\\.", "[a-c]", "[^a]"]
ATOMS += ["[\\d_]", "[\\s\\-]", "\\n", "é", "^", "$"]


@st.composite
def patterns(draw: st.DrawFn, depth: int = 0) -> str:
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        if depth < 2 and draw(st.integers(0, 4)) == 0:
            inner = draw(patterns(depth + 1))
            alt = draw(patterns(depth + 1)) if draw(st.booleans()) else None
            atom = f"({inner}|{alt})" if alt is not None else f"(?:{inner})"
        else:
            atom = draw(st.sampled_from(ATOMS))
        if atom not in ("^", "$"):
            atom += draw(st.sampled_from(["", "", "*", "+", "?", "{2}", "{0,2}", "{1,}"]))
        parts.append(atom)
    return "".join(parts)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pattern=patterns(),
    texts=st.lists(st.text("ab Σé1_\n\v\t.-", max_size=6), min_size=1, max_size=8),
)
def test_random_patterns_agree(
    pg: tuple[asyncio.AbstractEventLoop, asyncpg.Connection], pattern: str, texts: list[str]
) -> None:
    compiled = compile_regex(pattern)
    assert [compiled.search(t) is not None for t in texts] == pg_matches(pg, compiled.pg, texts)


@pytest.mark.parametrize(
    "pattern",
    [
        "(.*.*.*.*.*.*.*.*.*.*){100}x",  # took 14.8 s in a preview
        "(.*.*.*.*.*.*.*.*.*.*){21}x",
        "(.?.?.?.?.?.?.?.?.?.?){30}x",
        "((.*.*){10}){11}",
        "(.{0,99}.{0,99}.{0,99}){10}",
        "(a+|b*|c?){100}",
    ],
)
def test_patterns_postgresql_compiles_too_slowly_are_refused(pattern: str) -> None:
    with pytest.raises(ValueError, match="too costly for PostgreSQL"):
        compile_regex(pattern)


@pytest.mark.parametrize(
    "pattern",
    [
        "(.*.*.*.*.*.*.*.*.*.*){20}x",
        r"^\d{1,5}-[a-z]+$",
        r"(\w{1,63}\.){1,10}[a-z]{2,}",
        "(.{0,10}){100}",
        "(ab*c){100}",
    ],
)
def test_patterns_of_bearable_cost_pass(pattern: str) -> None:
    compile_regex(pattern)
