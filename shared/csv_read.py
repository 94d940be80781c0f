"""Reading an uploaded CSV file incrementally, in constant memory, as people's spreadsheets
write it: UTF-8 with or without a BOM, comma, semicolon or tab (sniffed from the header line),
quoted fields holding newlines, CRLF or LF, blank lines, spaces around the headers.

:class:`CsvStream` takes the file's bytes in pieces of any size (:meth:`CsvStream.feed`) and
returns the data records completed so far; the admin service runs it over the upload (to
check the encoding, count rows and build the preview) and the worker over the stored file.

A piece may end inside a quoted field: lines are held back until the quotes seen since the
last handed-over line balance, so the ``csv`` module only ever sees whole records. A file
whose quotes never balance (a stray ``"``) would be held back whole: past
:data:`MAX_RECORD_CHARS` it is refused, naming the row.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import AsyncIterator

#: Delimiters we sniff, in order of preference on a tie.
DELIMITERS = (",", ";", "\t")
#: Longest record (characters) we hold back while its quotes are open.
MAX_RECORD_CHARS = 4 * 1024 * 1024


class CsvError(ValueError):
    """The file cannot be read; ``message`` says why, for a person."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _encoding_name(sample: bytes) -> str:
    """A guess at what a file that is not UTF-8 is, to name it in the error."""
    if sample.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in sample[:4096]:
        return "UTF-16 (Excel's 'Unicode Text')"
    try:
        sample.decode("cp1252")
    except UnicodeDecodeError:
        return "an encoding other than UTF-8"
    return "Windows-1252 / ISO-8859-1 (Latin-1)"


def _header_names(cells: list[str]) -> list[str]:
    """Header cells trimmed; blank ones named ``column N``, repeated ones ``name (2)``."""
    names: list[str] = []
    seen: set[str] = set()
    for i, cell in enumerate(cells):
        base = cell.strip() or f"column {i + 1}"
        name, n = base, 2
        while name in seen:
            name, n = f"{base} ({n})", n + 1
        seen.add(name)
        names.append(name)
    return names


class CsvStream:
    """Incremental CSV reader: :meth:`feed` bytes, get the data records completed so far
    (each a list of cells, trimmed); :meth:`close` at the end of the file. The first
    non-blank record is the header (:attr:`header`); blank records are skipped."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self._consumed = 0
        self._first: bytes | None = None
        self._text_started = False
        self._rest = ""  # text after the last newline
        self._held: list[str] = []  # whole lines of a record whose quotes are still open
        self._held_chars = 0
        self._quotes = 0
        self.delimiter: str | None = None
        self.header: list[str] | None = None
        #: data records returned so far
        self.rows = 0

    def feed(self, data: bytes) -> list[list[str]]:
        """The data records that ``data`` completes."""
        if self._first is None:
            self._first = data[:4096]
            if data.startswith((b"\xff\xfe", b"\xfe\xff")):
                raise CsvError(
                    f"file: the file is {_encoding_name(data)}, not UTF-8; "
                    "save it as 'CSV UTF-8' and upload it again"
                )
        try:
            text = self._decoder.decode(data)
        except UnicodeDecodeError as exc:
            offset = self._consumed + exc.start
            raise CsvError(
                f"file: not UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {offset}); it "
                f"looks like {_encoding_name(self._first + data)}: save it as 'CSV UTF-8' "
                "and upload it again"
            ) from exc
        self._consumed += len(data)
        if not self._text_started and text:
            self._text_started = True
            text = text.removeprefix("\ufeff")  # the BOM Excel writes before 'CSV UTF-8'
        if "\x00" in text:
            raise CsvError(
                f"file: holds NUL characters; it looks like {_encoding_name(self._first)}, "
                "not UTF-8: save it as 'CSV UTF-8' and upload it again"
            )
        return self._lines(text, final=False)

    def close(self) -> list[list[str]]:
        """The last records, at the end of the file."""
        try:
            tail = self._decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise CsvError("file: ends in the middle of a UTF-8 character; not UTF-8") from exc
        return self._lines(tail, final=True)

    def _lines(self, text: str, *, final: bool) -> list[list[str]]:
        lines = (self._rest + text).split("\n")
        self._rest = "" if final else lines.pop()
        ready: list[str] = []
        for line in lines:
            self._held.append(line + "\n")
            self._held_chars += len(line) + 1
            self._quotes += line.count('"')
            if self._quotes % 2 == 0:
                ready.extend(self._held)
                self._held.clear()
                self._held_chars = self._quotes = 0
            elif self._held_chars > MAX_RECORD_CHARS:
                raise CsvError(
                    f"file: row {self.rows + 1} opens a quoted field that runs over "
                    f"{MAX_RECORD_CHARS // (1024 * 1024)} MB: a stray '\"'?"
                )
        if final and self._held:
            ready.extend(self._held)  # an unbalanced quote at the very end: csv decides
            self._held.clear()
        return self._records(ready)

    def _records(self, lines: list[str]) -> list[list[str]]:
        if not lines:
            return []
        if self.delimiter is None:
            first = next((line for line in lines if line.strip()), None)
            if first is None:
                return []
            self.delimiter = max(DELIMITERS, key=lambda d: (first.count(d), -DELIMITERS.index(d)))
        out: list[list[str]] = []
        try:
            for record in csv.reader(lines, delimiter=self.delimiter):
                cells = [cell.strip() for cell in record]
                if not any(cells):
                    continue  # a blank line (or only delimiters): not a row
                if self.header is None:
                    self.header = _header_names(cells)
                    continue
                out.append(cells)
        except csv.Error as exc:
            raise CsvError(f"file: row {self.rows + len(out) + 1}: {exc}") from exc
        self.rows += len(out)
        return out


async def read_records(
    stream: CsvStream, chunks: AsyncIterator[bytes]
) -> AsyncIterator[list[list[str]]]:
    """The data records of ``chunks`` in groups (one per chunk that completed any)."""
    async for chunk in chunks:
        records = stream.feed(chunk)
        if records:
            yield records
    records = stream.close()
    if records:
        yield records
