"""The query endpoints: the hot path of the whole system, kept lean on purpose: no DTOs or
dependency injection, msgspec encoders built once, bytes responses, one Redis round trip on a
cache hit."""

from __future__ import annotations

import math
from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.params import FromPath

from services.query.auth import verify_identity
from services.query.catalog import EnvSegments, SegmentRef
from services.query.state import QueryState
from shared.http import ApiError, decode_json, key_from_headers
from shared.messages import id_text

MAX_USER_ID = 255
MAX_CHECK_SEGMENTS = 1000
JSON = "application/json"


class UserSegments(msgspec.Struct):
    userId: str
    segments: list[SegmentRef]


class Membership(msgspec.Struct):
    member: bool


class CheckBody(msgspec.Struct, forbid_unknown_fields=False):
    #: a number is the user whose id ingest stored as its text (as ingest accepts it)
    userId: str | int | float
    segments: list[str]


class CheckResult(msgspec.Struct, omit_defaults=True):
    results: dict[str, bool]
    #: Names in the request that match no segment (answered false); omitted when empty.
    unknownSegments: list[str] = []


_encoder = msgspec.json.Encoder()
_check_decoder = msgspec.json.Decoder(CheckBody)
_MEMBER = _encoder.encode(Membership(True))
_NOT_MEMBER = _encoder.encode(Membership(False))


def _state(request: Request[Any, Any, Any]) -> QueryState:
    state: QueryState = request.app.state.query
    return state


def _check_user_id(user_id: str, status: int = 400) -> None:
    """400 for the path's userId, 422 (``status``) for a body's."""
    if not user_id or len(user_id) > MAX_USER_ID:
        raise ApiError(status, f"userId: must be 1 to {MAX_USER_ID} characters", "userId")


def _is_member(segs: EnvSegments, known: bool, ids: set[int], segment_id: int) -> bool:
    # "All users" holds for every known user, whether or not a membership row was written.
    return segment_id in ids or (known and segment_id == segs.all_id)


@get("/v1/users/{user_id:str}/segments")
async def user_segments(request: Request[Any, Any, Any], user_id: FromPath[str]) -> Response[bytes]:
    """Every segment the user belongs to: ``{"userId", "segments": [{"id", "key", "name"}]}``."""
    q = _state(request)
    env = await q.envs.require(key_from_headers(request.headers))
    _check_user_id(user_id)
    verify_identity(env, request.headers, user_id)
    known, ids = await q.memberships.read(env.id, user_id)
    segs = await q.catalog.covering(env.id, ids)
    if known and segs.all_id is not None:
        ids.add(segs.all_id)
    # Ids the catalog does not know belong to deleted segments: left out.
    refs = [segs.by_id[i] for i in sorted(ids) if i in segs.by_id]
    return Response(_encoder.encode(UserSegments(user_id, refs)), media_type=JSON)


@get("/v1/users/{user_id:str}/segments/{segment:str}")
async def user_in_segment(
    request: Request[Any, Any, Any], user_id: FromPath[str], segment: FromPath[str]
) -> Response[bytes]:
    """``{"member": bool}``; 404 only when no segment has that key or id."""
    q = _state(request)
    env = await q.envs.require(key_from_headers(request.headers))
    _check_user_id(user_id)
    verify_identity(env, request.headers, user_id)
    segs, segment_id = await q.catalog.resolve(env.id, segment)
    if segment_id is None:
        raise ApiError(404, f"segment: no segment with key or id {segment!r}", "segment")
    known, ids = await q.memberships.read(env.id, user_id)
    member = _is_member(segs, known, ids, segment_id)
    return Response(_MEMBER if member else _NOT_MEMBER, media_type=JSON)


@post("/v1/check", status_code=200)
async def check(request: Request[Any, Any, Any]) -> Response[bytes]:
    """``{"userId", "segments": [key or id, ...]}`` → ``{"results": {name: bool}}``.

    Names matching no segment are answered false and listed in ``unknownSegments`` (a renderer
    asking about a segment that was deleted needs an answer, not an error).
    """
    q = _state(request)
    env = await q.envs.require(key_from_headers(request.headers))
    body = decode_json(_check_decoder, await request.body())
    if isinstance(body.userId, float) and not math.isfinite(body.userId):
        raise ApiError(422, "userId: must be a finite number", "userId")
    user_id = id_text(body.userId)
    _check_user_id(user_id, 422)
    if len(body.segments) > MAX_CHECK_SEGMENTS:
        raise ApiError(422, f"segments: at most {MAX_CHECK_SEGMENTS} per request", "segments")
    verify_identity(env, request.headers, user_id)
    known, ids = await q.memberships.read(env.id, user_id)
    segs = await q.catalog.covering(env.id, ids)
    results: dict[str, bool] = {}
    unknown: list[str] = []
    for name in body.segments:
        segment_id = segs.lookup(name)
        if segment_id is None:
            segs, segment_id = await q.catalog.resolve(env.id, name)
        if segment_id is None:
            unknown.append(name)
            results[name] = False
        else:
            results[name] = _is_member(segs, known, ids, segment_id)
    return Response(_encoder.encode(CheckResult(results, unknown)), media_type=JSON)
