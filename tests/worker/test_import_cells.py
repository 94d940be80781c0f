"""An import's cells as attribute values (services.worker.import_rows.typed_value)."""

from __future__ import annotations

import pytest

from services.worker.import_rows import typed_value


@pytest.mark.parametrize(
    ("cell", "number"),
    [
        ("0", 0),
        ("-0", 0),
        ("42", 42),
        ("-42", -42),
        ("123456789012345678", 123456789012345678),
        ("1234567890123456789", 1.2345678901234568e18),  # past 18 digits: a float
        ("1.5", 1.5),
        ("-2e3", -2000.0),
        ("007", "007"),  # leading zeros: an identifier, kept as text
        ("-", "-"),
        ("\uff11\uff12", "\uff11\uff12"),  # full-width digits are not a number
        ("²", "²"),
        (" 1", " 1"),
        ("1e999", "1e999"),  # not finite: text
    ],
)
def test_numbers_read_as_numbers_and_the_rest_as_text(cell: str, number: object) -> None:
    for type_ in ("number", None):
        got = typed_value(cell, type_)
        assert got == number and type(got) is type(number)
    assert typed_value(cell, "string") == cell
