"""A small HTTP load generator on raw keep-alive connections (:mod:`bench.keepalive`).

Each run executes in a process of its own (:class:`Generator`) so that the generator gets a
core of its own; it reports its own CPU share so a saturated generator is visible.

Two shapes of load:
- :func:`closed_loop`: N connections, each sending its next request when the previous answer
  arrives (throughput at a given concurrency; the floor is ``GET /hello`` with the same client).
- :func:`open_loop`: GET requests sent at a fixed rate whatever the answers (latency counted
  from each request's scheduled send time, so a stalled server cannot hide its backlog);
- :func:`freshness`: identifies sent open-loop at a fixed rate (scheduled send times, latency
  counted from the schedule so a stalled server cannot hide its backlog), each user then polled
  on the query service until it is a member.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from array import array
from collections.abc import Callable, Coroutine
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any, Literal

import msgspec

from bench.cpu import CpuWindow
from bench.keepalive import (
    Connection,
    Pool,
    ProtocolError,
    Target,
    connect,
    get_request,
    identify_message,
    post_request,
)

_encoder = msgspec.json.Encoder()


class Workload(msgspec.Struct, frozen=True):
    """What each request is.

    ``paths``: GET requests cycling over these paths. ``identify``: POST /v1/identify, a new
    user each request (``user_prefix`` + counter). ``batch``: POST /v1/batch with ``batch_size``
    identifies of new users.
    """

    kind: Literal["paths", "identify", "batch"]
    paths: list[str] = []
    user_prefix: str = "u"
    batch_size: int = 100
    #: when set, answers whose body differs are counted as ``unexpected`` (a sanity check)
    expect_body: bytes | None = None


class ClosedSpec(msgspec.Struct, frozen=True):
    target: Target
    workload: Workload
    connections: int
    seconds: float
    warmup: float
    #: labelled pid groups whose CPU share is measured over the same window
    watch: dict[str, list[int]] = {}


class LoadResult(msgspec.Struct):
    """One closed-loop measurement (the warm-up excluded)."""

    requests: int
    messages: int
    seconds: float
    errors: int
    unexpected: int
    p50_ms: float
    p99_ms: float
    cpu: dict[str, float]
    first_error: str = ""

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def message_rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


class OpenSpec(msgspec.Struct, frozen=True):
    """GET requests cycling over ``paths`` at ``rate`` per second."""

    target: Target
    paths: list[str]
    rate: float
    seconds: float
    warmup: float
    #: keep-alive connections opened beforehand (more are opened when all are busy)
    connections: int = 32
    #: at most this many requests in flight (later ones wait, and the wait is counted)
    limit: int = 512
    expect_body: bytes | None = None
    watch: dict[str, list[int]] = {}


class OpenResult(msgspec.Struct):
    """One open-loop measurement (the warm-up excluded)."""

    sent: int
    answered: int
    seconds: float
    errors: int
    unexpected: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu: dict[str, float]
    first_error: str = ""

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


class FreshSpec(msgspec.Struct, frozen=True):
    ingest: Target
    query: Target
    segment: str
    user_prefix: str
    rate: float
    seconds: float
    warmup: float
    poll_interval: float
    #: only every n-th user is polled, so that measuring does not load the query service more
    #: than the identifies load the rest (all users are identified at ``rate``)
    sample_every: int
    give_up: float
    ingest_connections: int
    poll_connections: int
    watch: dict[str, list[int]] = {}


class FreshResult(msgspec.Struct):
    """Open-loop identifies and the delay until each user reads as a member."""

    sent: int
    seconds: float
    ack_errors: int
    ack_p50_ms: float
    ack_p99_ms: float
    sampled: int
    visible: int
    timed_out: int
    poll_requests: int
    poll_p50_ms: float
    poll_p99_ms: float
    visible_p50_ms: float
    visible_p99_ms: float
    visible_max_ms: float
    cpu: dict[str, float]
    #: user ids identified with a 2xx in the measured window (plan=pro, so members once applied)
    users: list[str]
    first_error: str = ""

    @property
    def achieved_rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


def percentile(values: array[float] | list[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in 0..1); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


# --- the connection --------------------------------------------------------------------------


def request_factory(target: Target, workload: Workload, lane: int) -> Callable[[], bytes]:
    """A function returning the next request of ``workload`` for connection number ``lane``
    (lanes use disjoint user ids)."""
    if workload.kind == "paths":
        requests = [get_request(target, p) for p in workload.paths]
        # start each lane at a different place so concurrent connections ask for different users
        cycle = itertools.cycle(requests[lane % len(requests) :] + requests[: lane % len(requests)])
        return cycle.__next__
    counter = itertools.count()
    prefix = f"{workload.user_prefix}{lane}-"
    plans = ("pro", "free")
    if workload.kind == "identify":

        def identify() -> bytes:
            n = next(counter)
            return post_request(
                target, "/v1/identify", _encoder.encode(identify_message(prefix + str(n), "pro"))
            )

        return identify

    def batch() -> bytes:
        first = next(counter) * workload.batch_size
        messages = [
            identify_message(prefix + str(n), plans[n % 2])
            for n in range(first, first + workload.batch_size)
        ]
        return post_request(target, "/v1/batch", _encoder.encode({"batch": messages}))

    return batch


def _accepted(workload: Workload, body: bytes) -> int:
    if workload.kind != "batch":
        return 1
    try:
        accepted = msgspec.json.decode(body).get("accepted", workload.batch_size)
    except (msgspec.DecodeError, AttributeError):
        return workload.batch_size
    return int(accepted)


# --- closed loop -----------------------------------------------------------------------------


async def closed_loop(spec: ClosedSpec) -> LoadResult:
    """Throughput and latency of ``spec.connections`` back-to-back request loops."""
    conns = [await connect(spec.target.host, spec.target.port) for _ in range(spec.connections)]
    latencies: array[float] = array("d")
    counts = {"requests": 0, "messages": 0, "errors": 0, "unexpected": 0}
    first_error: list[str] = []
    measuring = False
    stop = False
    workload = spec.workload

    async def lane(index: int, conn: Connection) -> None:
        next_request = request_factory(spec.target, workload, index)
        while not stop:
            data = next_request()
            started = time.perf_counter()
            try:
                status, body = await conn.request(data)
            except (OSError, ProtocolError) as exc:
                counts["errors"] += 1
                if not first_error:
                    first_error.append(repr(exc))
                return
            if not measuring:
                continue
            latencies.append(time.perf_counter() - started)
            counts["requests"] += 1
            if status >= 300:
                counts["errors"] += 1
                if not first_error:
                    first_error.append(f"{status} {body[:200]!r}")
                continue
            counts["messages"] += _accepted(workload, body)
            if workload.expect_body is not None and body != workload.expect_body:
                counts["unexpected"] += 1

    cpu = CpuWindow({"generator": [_own_pid()], **spec.watch})
    tasks = [asyncio.create_task(lane(i, c)) for i, c in enumerate(conns)]
    await asyncio.sleep(spec.warmup)
    measuring = True
    cpu.start()
    began = time.perf_counter()
    await asyncio.sleep(spec.seconds)
    measuring = False
    elapsed = time.perf_counter() - began
    shares = cpu.stop(elapsed)
    stop = True
    await asyncio.wait(tasks, timeout=30)
    for conn in conns:
        conn.close()
    return LoadResult(
        requests=counts["requests"],
        messages=counts["messages"],
        seconds=elapsed,
        errors=counts["errors"],
        unexpected=counts["unexpected"],
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        cpu=shares,
        first_error=first_error[0] if first_error else "",
    )


# --- open loop: requests at a fixed rate ----------------------------------------------------


async def paced(
    rate: float,
    warmup: float,
    seconds: float,
    send: Callable[[int, float, bool], Coroutine[Any, Any, None]],
    cpu: CpuWindow,
    drain: float,
) -> tuple[int, dict[str, float]]:
    """Start ``send(n, scheduled time, counted)`` as a task every 1/``rate`` seconds (on
    schedule, whether or not earlier ones are done) for ``warmup`` + ``seconds``; ``counted``
    is False during the warm-up. Waits up to ``drain`` seconds for the last ones; returns
    (how many were started counted, CPU shares over the counted window)."""
    tasks: set[asyncio.Task[None]] = set()
    interval = 1.0 / rate
    start = time.perf_counter()
    measure_from = start + warmup
    end = measure_from + seconds
    n = sent = 0
    measuring = False
    while True:
        scheduled = start + n * interval
        if scheduled >= end:
            break
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if not measuring and scheduled >= measure_from:
            measuring = True
            cpu.start()
        task = asyncio.create_task(send(n, scheduled, measuring))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        sent += measuring
        n += 1
    shares = cpu.stop(time.perf_counter() - measure_from)
    if tasks:
        await asyncio.wait(tasks, timeout=drain)
    return sent, shares


async def open_loop(spec: OpenSpec) -> OpenResult:
    """Send ``GET path`` (cycling over ``spec.paths``) every 1/rate seconds on a pool of
    keep-alive connections, whether or not earlier answers came back. Each latency runs from
    the request's scheduled send time to its answer."""
    pool = Pool(spec.target.host, spec.target.port, limit=spec.limit)
    await pool.prime(spec.connections)
    requests = itertools.cycle([get_request(spec.target, p) for p in spec.paths])
    latencies: array[float] = array("d")
    counts = {"sent": 0, "errors": 0, "unexpected": 0}
    first_error: list[str] = []

    async def one(data: bytes, scheduled: float, counted: bool) -> None:
        try:
            status, body = await pool.request(data)
        except (OSError, ProtocolError) as exc:
            counts["errors"] += counted
            if not first_error:
                first_error.append(repr(exc))
            return
        if not counted:
            return
        latencies.append(time.perf_counter() - scheduled)
        if status >= 300:
            counts["errors"] += 1
            if not first_error:
                first_error.append(f"{status} {body[:200]!r}")
        elif spec.expect_body is not None and body != spec.expect_body:
            counts["unexpected"] += 1

    cpu = CpuWindow({"generator": [_own_pid()], **spec.watch})
    counts["sent"], shares = await paced(
        spec.rate,
        spec.warmup,
        spec.seconds,
        lambda n, scheduled, counted: one(next(requests), scheduled, counted),
        cpu,
        drain=30,
    )
    pool.close()
    return OpenResult(
        sent=counts["sent"],
        answered=len(latencies),
        seconds=spec.seconds,
        errors=counts["errors"],
        unexpected=counts["unexpected"],
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        max_ms=max(latencies, default=math.nan) * 1000,
        cpu=shares,
        first_error=first_error[0] if first_error else "",
    )


# --- open loop: identify, then poll until the user is a member -------------------------------


async def freshness(spec: FreshSpec) -> FreshResult:
    """Identify (plan=pro) a new user every 1/rate seconds. For every ``sample_every``-th
    acknowledged one, poll ``GET /v1/users/{u}/segments/{segment}`` every ``poll_interval``
    (4 times less often after the first second) until ``member`` is true, and record the delay
    from the identify's acknowledgement to the answer of the first poll that said true.
    Users sent during the warm-up are not counted."""
    ingest, query = (
        Pool(spec.ingest.host, spec.ingest.port, limit=512),
        Pool(spec.query.host, spec.query.port, limit=512),
    )
    await ingest.prime(spec.ingest_connections)
    await query.prime(spec.poll_connections)
    acks: array[float] = array("d")
    polls: array[float] = array("d")
    visible: array[float] = array("d")
    users: list[str] = []
    state = {"ack_errors": 0, "timed_out": 0, "sampled": 0, "sent": 0}
    first_error: list[str] = []
    member = b'{"member":true}'

    def error(text: str) -> None:
        if not first_error:
            first_error.append(text)

    async def watch(user: str, acked: float) -> None:
        poll = get_request(spec.query, f"/v1/users/{user}/segments/{spec.segment}")
        interval = spec.poll_interval
        while True:
            await asyncio.sleep(interval)
            sent = time.perf_counter()
            try:
                status, answer = await query.request(poll)
            except (OSError, ProtocolError) as exc:
                error(f"poll: {exc!r}")
                continue
            now = time.perf_counter()
            polls.append(now - sent)
            if status == 200 and answer == member:
                visible.append(now - acked)
                return
            if status != 200:
                error(f"poll: {status} {answer[:200]!r}")
            if now - acked > spec.give_up:
                state["timed_out"] += 1
                return
            if now - acked > 1.0:
                interval = spec.poll_interval * 4

    async def one(n: int, scheduled: float, counted: bool) -> None:
        user = f"{spec.user_prefix}{n}"
        body = _encoder.encode(identify_message(user, "pro"))
        try:
            status, answer = await ingest.request(post_request(spec.ingest, "/v1/identify", body))
        except (OSError, ProtocolError) as exc:
            state["ack_errors"] += counted
            error(f"identify: {exc!r}")
            return
        acked = time.perf_counter()
        if status >= 300:
            state["ack_errors"] += counted
            error(f"identify: {status} {answer[:200]!r}")
            return
        if not counted:
            return
        acks.append(acked - scheduled)
        users.append(user)
        if n % spec.sample_every == 0:
            state["sampled"] += 1
            await watch(user, acked)

    cpu = CpuWindow({"generator": [_own_pid()], **spec.watch})
    state["sent"], shares = await paced(
        spec.rate, spec.warmup, spec.seconds, one, cpu, drain=spec.give_up + 30
    )
    ingest.close()
    query.close()
    return FreshResult(
        sent=state["sent"],
        seconds=spec.seconds,
        ack_errors=state["ack_errors"],
        ack_p50_ms=percentile(acks, 0.50) * 1000,
        ack_p99_ms=percentile(acks, 0.99) * 1000,
        sampled=state["sampled"],
        visible=len(visible),
        timed_out=state["timed_out"],
        poll_requests=len(polls),
        poll_p50_ms=percentile(polls, 0.50) * 1000,
        poll_p99_ms=percentile(polls, 0.99) * 1000,
        visible_p50_ms=percentile(visible, 0.50) * 1000,
        visible_p99_ms=percentile(visible, 0.99) * 1000,
        visible_max_ms=max(visible, default=math.nan) * 1000,
        cpu=shares,
        users=users,
        first_error=first_error[0] if first_error else "",
    )


# --- running in a process of its own ---------------------------------------------------------


def _own_pid() -> int:
    import os

    return os.getpid()


def _run(spec: ClosedSpec | OpenSpec | FreshSpec) -> LoadResult | OpenResult | FreshResult:
    try:
        import uvloop

        runner: Callable[..., LoadResult | OpenResult | FreshResult] = uvloop.run
    except ImportError:  # uvloop is optional: plain asyncio is slower but works
        runner = asyncio.run
    if isinstance(spec, ClosedSpec):
        return runner(closed_loop(spec))
    if isinstance(spec, OpenSpec):
        return runner(open_loop(spec))
    return runner(freshness(spec))


class Generator:
    """The load generator's process, started once and reused by every measurement."""

    def __init__(self) -> None:
        self._executor = ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn"))

    async def closed(self, spec: ClosedSpec) -> LoadResult:
        result = await asyncio.get_running_loop().run_in_executor(self._executor, _run, spec)
        assert isinstance(result, LoadResult)
        return result

    async def open(self, spec: OpenSpec) -> OpenResult:
        result = await asyncio.get_running_loop().run_in_executor(self._executor, _run, spec)
        assert isinstance(result, OpenResult)
        return result

    async def fresh(self, spec: FreshSpec) -> FreshResult:
        result = await asyncio.get_running_loop().run_in_executor(self._executor, _run, spec)
        assert isinstance(result, FreshResult)
        return result

    def close(self) -> None:
        self._executor.shutdown(cancel_futures=True)
