"""``/v1/imports``: CSV imports of users, segment members and segments (thin handlers over
:mod:`services.admin.imports.upload` and :mod:`services.admin.imports.service`)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.params import FromPath, FromQuery
from litestar.response import Stream

from services.admin.bodies import decode_body
from services.admin.csv_out import CSV_MEDIA_TYPE
from services.admin.imports import service
from services.admin.imports.schemas import Import, ImportList, ImportStart, start_decoder
from services.admin.imports.upload import file_stream, store_upload
from services.admin.segments.controller import page_args
from services.admin.segments.service import kind_phrase
from services.admin.state import Admin, Env
from shared.http import ApiError
from shared.import_mapping import KINDS


async def _check_segment(admin: Admin, env_id: int, kind: str, segment: str | None) -> None:
    if segment is None:
        return
    if kind != "members":
        raise ApiError(422, "segment: only a members import takes ?segment=", "segment")
    found = await admin.pool.fetchval(
        "SELECT kind FROM segments WHERE env_id = $1 AND key = $2", env_id, segment
    )
    if found != "manual":
        if found is None:
            raise ApiError(422, f"segment: no segment with key {segment!r}", "segment")
        raise ApiError(
            422, f"segment: {segment!r} is {kind_phrase(found)}, not a manual one", "segment"
        )


class ImportController(Controller):
    """Upload a CSV file, check the draft, start it; follow it; download its rejected rows."""

    path = "/v1/imports"

    @post("/", status_code=201, request_max_body_size=None)
    async def upload(
        self,
        request: Request[Any, Any, Any],
        admin: Admin,
        env: Env,
        kind: FromQuery[str] = "users",
        segment: FromQuery[str | None] = None,
    ) -> Import:
        """Upload a CSV file (``text/csv`` body, or the multipart field ``file``) as a draft
        import of ``kind`` (users, members, segments): its columns, first rows and a
        suggested mapping. ``segment``: the manual segment a members import fills."""
        if kind not in KINDS:
            raise ApiError(422, f"kind: must be one of {', '.join(KINDS)}", "kind")
        await _check_segment(admin, env.id, kind, segment)
        limit = admin.settings.import_max_bytes
        body, file_name = file_stream(request, limit)
        async with admin.pool.acquire() as conn:
            new_id = await store_upload(conn, env.id, kind, segment, file_name, body, limit)
        return service.to_import(await service.find_import(admin.pool, env.id, str(new_id)))

    @get("/")
    async def list_all(
        self,
        admin: Admin,
        env: Env,
        limit: FromQuery[int] = 50,
        cursor: FromQuery[str | None] = None,
    ) -> ImportList:
        """The imports, newest first; pass ``nextCursor`` back as ``cursor``."""
        before = page_args(limit, cursor) or None
        imports, next_cursor = await service.list_imports(admin.pool, env.id, limit, before)
        return ImportList(imports=imports, nextCursor=next_cursor)

    @get("/{import_ref:str}")
    async def read(self, admin: Admin, env: Env, import_ref: FromPath[str]) -> Import:
        """One import: status, progress (``rowsDone`` of ``rowsTotal``) and counts."""
        return service.to_import(await service.find_import(admin.pool, env.id, import_ref))

    @post("/{import_ref:str}/start", status_code=202)
    async def start(
        self, request: Request[Any, Any, Any], admin: Admin, env: Env, import_ref: FromPath[str]
    ) -> Import:
        """Start a draft with ``{"mapping": {...}}`` (default: the suggested mapping)."""
        raw = await request.body()
        body = decode_body(start_decoder, raw) if raw.strip() else ImportStart()
        async with admin.pool.acquire() as conn:
            return await service.start_import(conn, env.id, import_ref, body)

    @post("/{import_ref:str}/cancel", status_code=200)
    async def cancel(self, admin: Admin, env: Env, import_ref: FromPath[str]) -> Import:
        """Cancel a draft or a processing import; rows already applied stay applied."""
        async with admin.pool.acquire() as conn:
            return await service.cancel_import(conn, env.id, import_ref)

    @get("/{import_ref:str}/rejected")
    async def rejected(self, admin: Admin, env: Env, import_ref: FromPath[str]) -> Stream:
        """The rejected rows as CSV: the file's columns and ``error``, the reason."""
        row = await service.find_import(admin.pool, env.id, import_ref)
        return Stream(
            service.rejected_csv(admin.pool, env.id, row),
            media_type=CSV_MEDIA_TYPE,
            headers={
                "Content-Disposition": f'attachment; filename="import-{row["id"]}-rejected.csv"'
            },
        )
