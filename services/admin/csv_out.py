"""CSV written by the admin service (exports, rejected import rows), streamed row by row,
every cell escaped against formula injection (:mod:`shared.csv_cells`)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

from shared.csv_cells import escape_cell

CSV_MEDIA_TYPE = "text/csv; charset=utf-8"


class CsvLines:
    """Rows to CSV text, one encoded chunk per call (RFC 4180 quoting, CRLF line ends)."""

    def __init__(self) -> None:
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, lineterminator="\r\n")

    def encode(self, rows: Iterable[Iterable[str]]) -> bytes:
        for row in rows:
            self._writer.writerow([escape_cell(cell) for cell in row])
        text = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        return text.encode()
