"""Import request and response bodies (msgspec Structs, camelCase on the wire)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from shared.import_mapping import Mapping


class Import(msgspec.Struct, kw_only=True):
    """An import as the admin API shows it. ``status``: ``draft`` (uploaded, waiting for
    ``start``), ``processing`` (``rowsDone`` of ``rowsTotal``), ``done``, ``failed``
    (``error`` says why) or ``cancelled``. ``mapping`` is the suggested one while a draft,
    then the one the import runs with."""

    id: str
    kind: str
    status: str
    fileName: str | None
    segment: str | None
    delimiter: str
    columns: list[str]
    preview: list[list[str]]
    mapping: dict[str, Any]
    sizeBytes: int
    rowsTotal: int
    rowsDone: int
    created: int
    updated: int
    unchanged: int
    rejected: int
    error: str | None
    createdAt: datetime
    startedAt: datetime | None
    finishedAt: datetime | None


class ImportList(msgspec.Struct, kw_only=True):
    imports: list[Import]
    nextCursor: str | None = None


class ImportStart(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/imports/{id}/start``: the mapping to run with (default: the suggested one)."""

    mapping: Mapping | None = None


start_decoder = msgspec.json.Decoder(ImportStart)
