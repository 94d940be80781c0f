"""The HTTP side of the metrics: the request observer and the ``/metrics`` route.

The request observer (:func:`observe_requests`) wraps a Litestar app's ASGI handler, outside
its router, so that 404s and 405s are counted too. Labels are the route's template
(``/v1/users/{user_id}/segments``), never the raw path: a path that matched no route is
``unmatched``. Per request it costs two ``perf_counter`` calls, a dictionary look-up, a
bisection and three additions (:class:`RequestTallies`), and it sets the request id
(:mod:`shared.logs`) and echoes it in ``X-Request-Id``.

``/metrics`` is protected like the admin API: a secret key (of any environment: the figures
carry no environment label) or ``SEGMENTS_METRICS_TOKEN``.
"""

from __future__ import annotations

import hmac
import logging
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterator
from time import perf_counter
from typing import Any

from litestar import Litestar, Request, Response, get
from litestar.types import ASGIApp
from prometheus_client import REGISTRY, Metric
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily

from shared.http import ApiError, EnvironmentCache, key_from_headers
from shared.logs import request_id, request_id_from
from shared.metrics import CONTENT_TYPE, exposition
from shared.settings import Settings

log = logging.getLogger(__name__)
access_log = logging.getLogger("segments.access")

#: The route label of a path no route matched (404, and everything a scanner tries).
UNMATCHED = "unmatched"


#: Upper bounds of the request duration histogram (seconds): membership checks take about a
#: millisecond; imports and exports take seconds.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class RouteTally:
    """One route template and method's requests: a count per status, and a histogram of
    durations (a count per bucket, the last one above every bound, and the sum)."""

    __slots__ = ("by_status", "counts", "total")

    def __init__(self) -> None:
        self.by_status: dict[int, int] = {}
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0


class RequestTallies:
    """The HTTP request figures of this process, exposed as ``segments_http_requests_total``
    (route, method, status) and ``segments_http_request_duration_seconds`` (route, method).

    Plain integers updated on the event loop's thread, read at scrape time on the same thread,
    instead of prometheus_client's Counter and Histogram: those take a lock per increment
    (three per observation), several microseconds a request on this machine, where these cost
    a dictionary look-up, a bisection and three additions."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], RouteTally] = {}

    def tally(self, route: str, method: str) -> RouteTally:
        found = self.routes.get((route, method))
        if found is None:
            if method not in _METHODS:  # the client's to choose: bounded
                method = "other"
            found = self.routes.setdefault((route, method), RouteTally())
        return found

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "segments_http_requests",
            "HTTP requests answered, by route template, method and status",
            labels=["route", "method", "status"],
        )
        durations = HistogramMetricFamily(
            "segments_http_request_duration_seconds",
            "Time from a request's arrival at the app to the end of its answer, by route "
            "template and method",
            labels=["route", "method"],
        )
        bounds = [*(f"{b:g}" for b in BUCKETS), "+Inf"]
        for (route, method), t in list(self.routes.items()):
            for status, n in list(t.by_status.items()):
                requests.add_metric([route, method, str(status)], n)
            cumulative, buckets = 0, []
            for bound, n in zip(bounds, t.counts, strict=True):
                cumulative += n
                buckets.append((bound, cumulative))
            durations.add_metric([route, method], buckets, t.total)
        yield requests
        yield durations


#: This process's request figures (every app observed in it adds to them).
TALLIES = RequestTallies()
REGISTRY.register(TALLIES)


def observe_requests(app: Litestar, settings: Settings) -> Litestar:
    """Count and time every HTTP request ``app`` answers (see the module's doc), set its
    request id and echo it; with ``settings.access_log``, log one line per request. Nothing
    when ``settings.http_metrics`` is off. Returns ``app``."""
    if not settings.http_metrics:
        return app
    access = settings.access_log
    inner: ASGIApp = app.asgi_handler
    tally = TALLIES.tally

    # (ASGI scopes and messages as plain dicts: litestar's TypedDicts would need a cast per
    # key on this hot path)
    async def observed(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await inner(scope, receive, send)
            return
        started = perf_counter()
        rid_header = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                rid_header = value
                break
        rid = request_id_from(rid_header)
        # not reset afterwards: uvicorn runs each request in a task of its own (a copy of the
        # context), and the next request served in the same context sets its own
        request_id.set(rid)
        status = 500
        header = (b"x-request-id", rid.encode())

        async def send_observed(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await inner(scope, receive, send_observed)
        finally:
            elapsed = perf_counter() - started
            route = scope.get("path_template") or UNMATCHED
            method = scope["method"]
            t = tally(route, method)
            t.by_status[status] = t.by_status.get(status, 0) + 1
            t.counts[bisect_left(BUCKETS, elapsed)] += 1
            t.total += elapsed
            if access:
                access_log.info(
                    "%s %s %d %.1f ms",
                    method,
                    route,
                    status,
                    elapsed * 1000,
                    extra={
                        "fields": {
                            "method": method,
                            "route": route,
                            "path": scope["path"],
                            "status": status,
                            "durationMs": round(elapsed * 1000, 3),
                        }
                    },
                )

    app.asgi_handler = observed
    return app


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


# -- who may read /metrics -------------------------------------------------------------------


async def check_scrape_access(key: str | None, token: str | None, envs: EnvironmentCache) -> int:
    """HTTP status for a ``/metrics`` request carrying ``key`` (its bearer or basic
    credential): 200 for ``SEGMENTS_METRICS_TOKEN`` or any environment's secret key, 401 for
    none or an unknown one, 403 for a write key (protected like the admin API)."""
    if not key:
        return 401
    if token and hmac.compare_digest(key.encode(), token.encode()):
        return 200
    env = await envs.get(key)
    if env is None:
        return 401
    return 200 if env.secret else 403


REFUSALS = {
    401: "missing or unknown credential: send Authorization: Bearer <a secret key or "
    "SEGMENTS_METRICS_TOKEN>",
    403: "metrics need a secret key or SEGMENTS_METRICS_TOKEN, not a write key",
}


def metrics_route(
    envs_of: Callable[[Request[Any, Any, Any]], EnvironmentCache],
    token: str | None,
    refresh: Callable[[Request[Any, Any, Any]], Awaitable[None]] | None = None,
) -> Any:
    """The ``GET /metrics`` handler of an HTTP service: ``envs_of(request)`` is the service's
    environment cache (to judge keys), ``refresh`` updates scrape-time gauges first."""

    @get("/metrics", include_in_schema=False)
    async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
        status = await check_scrape_access(
            key_from_headers(request.headers), token, envs_of(request)
        )
        if status != 200:
            raise ApiError(status, REFUSALS[status], "authorization")
        if refresh is not None:
            await refresh(request)
        return Response(exposition(), media_type=CONTENT_TYPE)

    return metrics
