"""The floor of the query service's membership check: a minimal Litestar app with the same
route, answering the same JSON from the same Redis set the simplest way (one ``SMEMBERS`` by
redis-py, one ``in``, one encode), served the same way as the real service (uvicorn, uvloop,
httptools, one process). :mod:`bench.query` starts it beside the query service.

    python -m bench.query_floor --port P --redis URL --prefix P --env-id N \
        --segments '{"plan-pro": 2}' --authorization 'Bearer wk_...'

What it leaves out is what the real service adds: key look-up (one string comparison here),
rate limits, identity verification, the catalog of segment keys, the version marker, the
PostgreSQL fallback, anonymous ids, error shapes, middleware and CORS.
"""

from __future__ import annotations

import argparse
from typing import Any

import msgspec
import redis.asyncio as aioredis
import uvicorn
from litestar import Litestar, Request, Response, get

_MEMBER = b'{"member":true}'
_NOT_MEMBER = b'{"member":false}'


def create_app(
    redis_url: str, prefix: str, env_id: int, segments: dict[str, int], authorization: str
) -> Litestar:
    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    ids = {key: str(segment_id) for key, segment_id in segments.items()}

    @get("/v1/users/{user_id:str}/segments/{segment:str}")
    async def member(
        request: Request[Any, Any, Any], user_id: str, segment: str
    ) -> Response[bytes]:
        if request.headers.get("authorization") != authorization:
            return Response(b'{"error":"unknown API key"}', status_code=401)
        segment_id = ids.get(segment)
        if segment_id is None:
            return Response(b'{"error":"no such segment"}', status_code=404)
        members = await redis.smembers(f"{prefix}:m:{{{env_id}:{user_id}}}")  # type: ignore[misc]
        return Response(
            _MEMBER if segment_id in members else _NOT_MEMBER, media_type="application/json"
        )

    @get("/health")
    async def health() -> Response[bytes]:
        await redis.ping()
        return Response(b'{"status":"ok"}', media_type="application/json")

    return Litestar(route_handlers=[member, health], openapi_config=None)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.query_floor", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--redis", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--env-id", type=int, required=True)
    p.add_argument("--segments", required=True, help="JSON object: segment key -> id")
    p.add_argument("--authorization", required=True, help="the Authorization header accepted")
    args = p.parse_args()
    app = create_app(
        args.redis,
        args.prefix,
        args.env_id,
        msgspec.json.decode(args.segments, type=dict[str, int]),
        args.authorization,
    )
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
