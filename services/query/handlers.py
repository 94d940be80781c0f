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
from services.query.catalog import SegmentKeys, SegmentRef
from services.query.state import QueryState
from shared.environments import Environment
from shared.http import ApiError, decode_json, key_from_headers
from shared.messages import id_text
from shared.redis_keys import ANONYMOUS_MARK, anonymous

MAX_USER_ID = 255
MAX_CHECK_SEGMENTS = 1000
JSON = "application/json"


class UserSegments(msgspec.Struct):
    userId: str
    segments: list[SegmentRef]


class AnonymousSegments(msgspec.Struct):
    anonymousId: str
    segments: list[SegmentRef]


class Membership(msgspec.Struct):
    member: bool


class CheckBody(msgspec.Struct, forbid_unknown_fields=False):
    """Exactly one of ``userId`` and ``anonymousId`` (separate namespaces, as in ingest)."""

    segments: list[str]
    #: a number is the user whose id ingest stored as its text (as ingest accepts it)
    userId: str | int | float | None = None
    anonymousId: str | int | float | None = None


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


def _check_user_id(user_id: str, status: int = 400, field: str = "userId") -> None:
    """400 for the path's userId, 422 (``status``) for a body's."""
    if not user_id or len(user_id) > MAX_USER_ID:
        raise ApiError(status, f"{field}: must be 1 to {MAX_USER_ID} characters", field)


async def _caller(q: QueryState, request: Request[Any, Any, Any]) -> Environment:
    """The caller's environment, within the rate limits of its address and key."""
    q.limits.check_address(request.scope)
    env = await q.envs.require(key_from_headers(request.headers))
    q.limits.check_key(env)
    return env


def _is_member(segs: SegmentKeys, known: bool, ids: set[int], segment_id: int) -> bool:
    # "All users" holds for every known user, whether or not a membership row was written.
    return segment_id in ids or (known and segment_id == segs.all_id)


async def _segments(request: Request[Any, Any, Any], ident: str, field: str) -> list[SegmentRef]:
    """The segments of ``ident`` (a userId, or a marked anonymous id; ``field`` names it)."""
    q = _state(request)
    env = await _caller(q, request)
    shown = ident.removeprefix(ANONYMOUS_MARK)
    _check_user_id(shown, field=field)
    verify_identity(env, request.headers, shown, q.token_max_age)
    known, ids = await q.memberships.read(env.id, ident)
    segs = await q.catalog.covering(env.id, ids)
    if known and segs.all_id is not None:
        ids.add(segs.all_id)
    # Ids the catalog does not know belong to deleted segments: left out.
    return [segs.by_id[i] for i in sorted(ids) if i in segs.by_id]


async def _in_segment(
    request: Request[Any, Any, Any], ident: str, field: str, segment: str
) -> Response[bytes]:
    q = _state(request)
    env = await _caller(q, request)
    shown = ident.removeprefix(ANONYMOUS_MARK)
    _check_user_id(shown, field=field)
    verify_identity(env, request.headers, shown, q.token_max_age)
    segs, segment_id = await q.catalog.resolve(env.id, segment)
    if segment_id is None:
        raise ApiError(404, f"segment: no segment with key or id {segment!r}", "segment")
    known, ids = await q.memberships.read(env.id, ident)
    member = _is_member(segs, known, ids, segment_id)
    return Response(_MEMBER if member else _NOT_MEMBER, media_type=JSON)


@get("/v1/users/{user_id:str}/segments")
async def user_segments(request: Request[Any, Any, Any], user_id: FromPath[str]) -> Response[bytes]:
    """Every segment the user belongs to: ``{"userId", "segments": [{"id", "key", "name"}]}``."""
    refs = await _segments(request, user_id, "userId")
    return Response(_encoder.encode(UserSegments(user_id, refs)), media_type=JSON)


@get("/v1/users/{user_id:str}/segments/{segment:str}")
async def user_in_segment(
    request: Request[Any, Any, Any], user_id: FromPath[str], segment: FromPath[str]
) -> Response[bytes]:
    """``{"member": bool}``; 404 only when no segment has that key or id."""
    return await _in_segment(request, user_id, "userId", segment)


@get("/v1/anonymous/{anonymous_id:str}/segments")
async def anonymous_segments(
    request: Request[Any, Any, Any], anonymous_id: FromPath[str]
) -> Response[bytes]:
    """The segments of an anonymous visitor (by anonymous id; once identified, the user's):
    ``{"anonymousId", "segments": [...]}``. Anonymous ids never answer for a userId."""
    refs = await _segments(request, anonymous(anonymous_id), "anonymousId")
    return Response(_encoder.encode(AnonymousSegments(anonymous_id, refs)), media_type=JSON)


@get("/v1/anonymous/{anonymous_id:str}/segments/{segment:str}")
async def anonymous_in_segment(
    request: Request[Any, Any, Any], anonymous_id: FromPath[str], segment: FromPath[str]
) -> Response[bytes]:
    """``{"member": bool}`` for an anonymous id; 404 only when no segment has that key or id."""
    return await _in_segment(request, anonymous(anonymous_id), "anonymousId", segment)


def _check_subject(body: CheckBody) -> tuple[str, str]:
    """(ident for the membership read, the id as given) of a check body: exactly one of
    userId and anonymousId, a number taken as its text."""
    if (body.userId is None) == (body.anonymousId is None):
        raise ApiError(422, "userId: send exactly one of userId and anonymousId", "userId")
    field, value = (
        ("userId", body.userId)
        if body.userId is not None
        else (
            "anonymousId",
            body.anonymousId,
        )
    )
    assert value is not None
    if isinstance(value, float) and not math.isfinite(value):
        raise ApiError(422, f"{field}: must be a finite number", field)
    text = id_text(value)
    _check_user_id(text, 422, field)
    return (text if field == "userId" else anonymous(text)), text


@post("/v1/check", status_code=200)
async def check(request: Request[Any, Any, Any]) -> Response[bytes]:
    """``{"userId" | "anonymousId", "segments": [key or id, ...]}`` →
    ``{"results": {name: bool}}``.

    Names matching no segment are answered false and listed in ``unknownSegments`` (a renderer
    asking about a segment that was deleted needs an answer, not an error).
    """
    q = _state(request)
    env = await _caller(q, request)
    body = decode_json(_check_decoder, await request.body())
    ident, shown = _check_subject(body)
    if len(body.segments) > MAX_CHECK_SEGMENTS:
        raise ApiError(422, f"segments: at most {MAX_CHECK_SEGMENTS} per request", "segments")
    verify_identity(env, request.headers, shown, q.token_max_age)
    known, ids = await q.memberships.read(env.id, ident)
    segs = await q.catalog.covering(env.id, ids)
    results: dict[str, bool] = {}
    unknown: list[str] = []
    segs, found = await q.catalog.resolve_many(env.id, body.segments, segs)
    for name in body.segments:
        segment_id = found[name]
        if segment_id is None:
            unknown.append(name)
            results[name] = False
        else:
            results[name] = _is_member(segs, known, ids, segment_id)
    return Response(_encoder.encode(CheckResult(results, unknown)), media_type=JSON)
