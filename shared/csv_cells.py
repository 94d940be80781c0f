"""Formula escaping of CSV cells, both ways: exports escape, imports unescape.

A cell a spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``, ``@``, a tab or
a carriage return) is written with a leading ``'`` (OWASP's advice), except plain numbers such
as ``-5``, which a spreadsheet reads as numbers. An import strips that ``'`` again before such
a character, so an export imported back is the same data (a value that really began with
``'=`` would lose its quote: the price of the round trip)."""

from __future__ import annotations

import re

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?")


def escape_cell(cell: str) -> str:
    """``cell`` made safe to open in a spreadsheet."""
    if cell.startswith(_FORMULA_START) and not _NUMBER.fullmatch(cell):
        return "'" + cell
    return cell


def unescape_cell(cell: str) -> str:
    """What :func:`escape_cell` was given."""
    if cell.startswith("'") and cell[1:].startswith(_FORMULA_START):
        return cell[1:]
    return cell
