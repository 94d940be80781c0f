"""The accepted ``regex`` syntax: a subset of RE2 whose meaning is identical in PostgreSQL.

RE2 (Python engine) and PostgreSQL's ARE (SQL engine) differ in details: what ``.`` does with
newlines, what ``\\s`` and ``\\w`` cover, escapes, bounds. Rather than trust the two to agree, a
pattern is parsed here and *re-emitted* for each engine from the parsed form, using only
constructs with one meaning in both. Accepted:

- literal characters; ``\\`` followed by punctuation is that character; ``\\t \\n \\r \\f \\v``;
- ``.`` (any character, newlines included), ``^`` and ``$`` (start / end of the whole text);
- ``[...]`` and ``[^...]`` with single characters and ranges (``\\]``, ``\\-`` etc. for the
  specials); ``\\d \\w \\s`` inside or outside brackets, ``\\D \\W \\S`` outside, all ASCII-only
  (``\\s`` is space, tab, newline, carriage return, form feed);
- groups ``(...)`` and ``(?:...)``, alternation ``|``;
- one greedy quantifier per atom: ``* + ?`` or ``{n}``, ``{n,}``, ``{n,m}`` with n, m <= 100
  and nested counts multiplying to at most 1000;
- a PostgreSQL compile cost of at most :data:`MAX_COST`: each open quantifier costs
  :data:`LOOP_COST` (``* + ?`` and ``{n,}``) or m - n (``{n,m}``, an optional copy each),
  times the copies the bounded repeats around it make. PostgreSQL expands ``{n}`` into n
  copies and compiles the copies' empty and looping arcs in time growing with about the fifth
  power of their number, while RE2 is linear whatever the pattern. Measured on PostgreSQL 15
  (compile of one pattern): ``(.*.*.*.*.*.*.*.*.*.*){20}`` (cost 2,000) 0.07 s; ``{30}``
  1 s; ``{50}`` 12.7 s; ``{100}`` over 20 s; ``(.{0,99}`` ten times ``){10}`` (9,900) 2 s;
  the dearest accepted shape found, ``(.*.{0,10}){100}`` (2,000), 0.6 s.

Rejected (a validation error): backreferences, lookaround, flags, lazy or possessive
quantifiers, word boundaries, named classes, Unicode classes, and anything else not listed.
Because both engines are automata (no backtracking semantics) and only test whether a match
exists, the same language gives the same answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import re2

MAX_PATTERN = 200
MAX_BOUND = 100
MAX_REPEAT_PRODUCT = 1000
MAX_COST = 2000
LOOP_COST = 10

_META = set("\\.+*?()|[]{}^$")
_CONTROL = {"t": "\t", "n": "\n", "r": "\r", "f": "\f", "v": "\v"}
_CLASS = {
    "d": [("0", "9")],
    "w": [("0", "9"), ("A", "Z"), ("a", "z"), ("_", "_")],
    "s": [(" ", " "), ("\t", "\n"), ("\f", "\r")],
}
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


class _Parser:
    def __init__(self, pattern: str) -> None:
        self.s = pattern
        self.i = 0

    def error(self, message: str) -> ValueError:
        return ValueError(f"regex {message} at position {self.i}")

    def peek(self) -> str | None:
        return self.s[self.i] if self.i < len(self.s) else None

    def take(self) -> str:
        ch = self.s[self.i]
        self.i += 1
        return ch

    # Each parse step returns (RE2 text, PostgreSQL text, repeat factor, compile cost of its
    # open quantifiers once the bounded repeats are expanded).
    def alternation(self, depth: int) -> tuple[str, str, int, int]:
        branches = [self.concat(depth)]
        while self.peek() == "|":
            self.take()
            branches.append(self.concat(depth))
        return (
            "|".join(b[0] for b in branches),
            "|".join(b[1] for b in branches),
            max(b[2] for b in branches),
            sum(b[3] for b in branches),
        )

    def concat(self, depth: int) -> tuple[str, str, int, int]:
        parts: list[tuple[str, str, int, int]] = []
        while (ch := self.peek()) is not None and ch not in "|)":
            parts.append(self.repeat(depth))
        return (
            "".join(p[0] for p in parts),
            "".join(p[1] for p in parts),
            max((p[2] for p in parts), default=1),
            sum(p[3] for p in parts),
        )

    def repeat(self, depth: int) -> tuple[str, str, int, int]:
        start = self.i
        r2, pg, factor, loops, quantifiable = self.atom(depth)
        ch = self.peek()
        if ch is None or ch not in "*+?{":
            return r2, pg, factor, loops
        if not quantifiable:
            raise self.error(f"quantifier after {self.s[start : self.i]!r}")
        quant, count, open_ = self.quantifier()
        if (nxt := self.peek()) is not None and nxt in "*+?{":
            raise self.error("two quantifiers in a row (lazy/possessive are not supported)")
        factor *= count
        if factor > MAX_REPEAT_PRODUCT:
            raise self.error("nested repeat counts are too large")
        loops = loops * count + open_
        if loops > MAX_COST:
            raise self.error(
                "is too costly for PostgreSQL to compile: too many open quantifiers "
                "(* + ? {n,} {n,m}) once the bounded repeats around them are expanded "
                f"(cost {loops}, at most {MAX_COST})"
            )
        return r2 + quant, pg + quant, factor, loops

    def quantifier(self) -> tuple[str, int, int]:
        """(text, repeat count, compile cost of its being open: matching a varying number of
        times)."""
        ch = self.take()
        if ch != "{":
            return ch, 1, LOOP_COST
        close = self.s.find("}", self.i)
        body = self.s[self.i : close] if close >= 0 else ""
        lo_text, comma, hi_text = body.partition(",")
        if not lo_text.isascii() or not lo_text.isdigit():
            raise self.error("expects {n}, {n,} or {n,m} after '{' (write \\{ for a brace)")
        if hi_text and not (hi_text.isascii() and hi_text.isdigit()):
            raise self.error("has a malformed {n,m} bound")
        lo = int(lo_text)
        hi = int(hi_text) if hi_text else lo
        if lo > MAX_BOUND or hi > MAX_BOUND:
            raise self.error(f"repeat bounds must be at most {MAX_BOUND}")
        if hi < lo:
            raise self.error("has {n,m} with m < n")
        self.i = close + 1
        text = f"{{{lo}}}" if not comma else (f"{{{lo},}}" if not hi_text else f"{{{lo},{hi}}}")
        cost = 0 if not comma else (LOOP_COST if not hi_text else hi - lo)
        return text, max(hi, lo, 1), cost

    def atom(self, depth: int) -> tuple[str, str, int, int, bool]:
        ch = self.take()
        if ch == "(":
            if depth >= 20:
                raise self.error("nests groups too deeply")
            if self.s.startswith("?:", self.i):
                self.i += 2
            elif self.peek() == "?":
                raise self.error("group flags and lookaround are not supported")
            r2, pg, factor, loops = self.alternation(depth + 1)
            if self.peek() != ")":
                raise self.error("has an unclosed group")
            self.take()
            return f"(?:{r2})", f"(?:{pg})", factor, loops, True
        if ch == ")":
            raise self.error("has an unbalanced ')'")
        if ch == ".":
            return "(?s:.)", ".", 1, 0, True
        if ch in "^$":
            return ch, ch, 1, 0, False
        if ch == "[":
            ranges, negated = self.bracket()
            text = _emit_class(ranges, negated)
            return text, text, 1, 0, True
        if ch in "*+?{":
            raise self.error(f"has nothing to repeat before {ch!r}")
        if ch == "\\":
            return self.escape()
        lit = _literal(ch)
        return lit, lit, 1, 0, True

    def escape(self) -> tuple[str, str, int, int, bool]:
        if self.peek() is None:
            raise self.error("ends with a lone backslash")
        ch = self.take()
        if ch in _CONTROL:
            lit = _literal(_CONTROL[ch])
            return lit, lit, 1, 0, True
        if ch.lower() in _CLASS:
            text = _emit_class(_CLASS[ch.lower()], ch.isupper())
            return text, text, 1, 0, True
        if ch.isascii() and not ch.isalnum() and ch.isprintable() and ch != " ":
            lit = _literal(ch)
            return lit, lit, 1, 0, True
        raise self.error(f"escape \\{ch} is not supported")

    def bracket(self) -> tuple[list[tuple[str, str]], bool]:
        negated = self.peek() == "^"
        if negated:
            self.take()
        ranges: list[tuple[str, str]] = []
        while True:
            ch = self.peek()
            if ch is None:
                raise self.error("has an unclosed '['")
            self.take()
            if ch == "]":
                if not ranges:
                    raise self.error("has an empty bracket (write \\] for a bracket)")
                return ranges, negated
            if ch == "[":
                raise self.error("has '[' inside brackets (write \\[)")
            lo = self.bracket_char(ch, ranges)
            if lo is None:
                continue
            if self.peek() == "-" and self.s[self.i + 1 : self.i + 2] not in ("]", ""):
                self.take()
                hi = self.bracket_char(self.take(), ranges)
                if hi is None or hi < lo:
                    raise self.error("has an invalid range")
                ranges.append((lo, hi))
            else:
                ranges.append((lo, lo))

    def bracket_char(self, ch: str, ranges: list[tuple[str, str]]) -> str | None:
        """A bracket character, or None after appending a class escape like \\d."""
        if ch == "-" and ranges and self.peek() != "]":
            raise self.error("has an ambiguous '-' in brackets (write \\-)")
        if ch != "\\":
            return ch
        if self.peek() is None:
            raise self.error("ends with a lone backslash")
        esc = self.take()
        if esc in _CONTROL:
            return _CONTROL[esc]
        if esc in _CLASS:
            ranges.extend(_CLASS[esc])
            return None
        if esc.isascii() and not esc.isalnum() and esc.isprintable() and esc != " ":
            return esc
        raise self.error(f"escape \\{esc} is not supported in brackets")


def _literal(ch: str) -> str:
    if ch in _META or ch == "}":
        return "\\" + ch
    return ch


def _class_char(ch: str) -> str:
    return "\\" + ch if ch in "\\]-^[" else ch


def _emit_class(ranges: list[tuple[str, str]], negated: bool) -> str:
    body = "".join(
        _class_char(lo) if lo == hi else f"{_class_char(lo)}-{_class_char(hi)}" for lo, hi in ranges
    )
    return f"[{'^' if negated else ''}{body}]"


class CompiledRegex:
    """A validated pattern: ``re2`` for Python, ``pg`` for PostgreSQL's ``~``."""

    __slots__ = ("found", "pg", "re2", "search")

    def __init__(self, re2_text: str, pg_text: str) -> None:
        self.re2 = re2_text
        self.pg = pg_text
        compiled = re2.compile(re2_text, _RE2_OPTIONS)
        self.search: Callable[[str], Any] = compiled.search
        #: whether the pattern is found in a text (what conditions ask), a sixth of search's
        #: cost: google-re2's own search wraps the same RE2 call in a generator and a match
        #: object; when the RE2 object is not where that version keeps it, search decides
        self.found: Callable[[str], bool] = _found(compiled)


def _found(compiled: Any) -> Callable[[str], bool]:
    regexp = getattr(compiled, "_regexp", None)
    anchor = getattr(getattr(getattr(re2, "_re2", None), "RE2", None), "Anchor", None)
    if regexp is None or anchor is None:
        search = compiled.search
        return lambda text: search(text) is not None
    match, unanchored, null = regexp.Match, anchor.UNANCHORED, (-1, -1)

    def found(text: str) -> bool:
        encoded = text.encode()
        return bool(match(unanchored, encoded, 0, len(encoded))[0] != null)

    return found


def compile_regex(pattern: str) -> CompiledRegex:
    """Validate ``pattern`` against the accepted subset and emit it for both engines.
    Raises ValueError with a readable reason."""
    if len(pattern) > MAX_PATTERN:
        raise ValueError(f"regex is longer than {MAX_PATTERN} characters")
    parser = _Parser(pattern)
    r2, pg, _, _ = parser.alternation(0)
    if parser.i != len(pattern):
        raise parser.error("has an unbalanced ')'")
    try:
        return CompiledRegex(r2, pg)
    except Exception as exc:  # re2 raises its own error type
        raise ValueError(f"regex does not compile under RE2: {exc}") from exc
