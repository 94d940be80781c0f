"""Webhook delivery: the worker sends the deliveries queued with each membership change.

Each call of :func:`deliver_webhooks` (a cron job, every second) claims due deliveries in small
batches with ``FOR UPDATE SKIP LOCKED``, so any number of workers share the work. Claiming
commits a lease (``next_attempt_at`` pushed :data:`LEASE_SECONDS` ahead) rather than holding a
transaction open across HTTP calls; then the batch is sent and the outcomes written:

- a 2xx marks the delivery ``delivered``: it is never claimed again, so no restart re-sends it;
- anything else (a status, a timeout, a refused connection) counts an attempt and schedules
  the next one after an exponential backoff with jitter, until :data:`MAX_ATTEMPTS` (then
  ``failed``; the admin API can queue it again);
- a worker killed between sending and writing the outcome leaves the lease to expire, and the
  delivery is sent again: delivery is at least once, and ``X-Segments-Delivery`` (the delivery
  id) lets receivers drop duplicates.

Deliveries of one webhook are sent one at a time in change order, and the first failure
postpones the rest of that webhook's batch, so a healthy receiver sees changes in order.

Every request carries ``X-Segments-Timestamp`` (Unix seconds) and ``X-Segments-Signature:
sha256=<hex>``, the HMAC-SHA256 of ``"<timestamp>.<body>"`` under the webhook's secret.

Unless ``SEGMENTS_WEBHOOK_ALLOW_PRIVATE`` is set, every attempt resolves the URL's host and
refuses it when any address is not public (``shared.webhook_targets``): nothing is sent, and
the attempt fails like any other ("blocked: 10.0.0.5 is a private address" in the log),
backing off and retrying, since the URL may be corrected by then (pending deliveries use the
current one). The connection goes to an address that was checked (:class:`PinnedTransport`),
so DNS rebinding cannot slip another one in; redirects are never followed.

Exits recorded by a privacy erase (cause ``erase``) carry the userId so that subscribers can
remove the person too; once such a delivery is delivered or given up, its payload's userId
is blanked.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import ssl
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import msgspec

from shared.metrics import WEBHOOK_DELIVERIES
from shared.settings import Settings
from shared.webhook_targets import BlockedTarget, IPAddress, check_addresses, resolve

log = logging.getLogger("segments.webhooks")

#: Deliveries one claim takes.
BATCH = 50
#: Seconds one HTTP attempt may take in all.
TIMEOUT = 5.0
#: Seconds a claimed delivery is reserved for its worker; it must outlast sending a batch.
LEASE_SECONDS = 120
#: Seconds of sending to one webhook within a batch before the rest is released.
WEBHOOK_BUDGET = 30.0
#: Seconds one job keeps claiming batches (the next cron run goes on).
JOB_SECONDS = 20.0
#: Attempts before a delivery is given up ('failed').
MAX_ATTEMPTS = 24
#: Longest wait between two attempts (before jitter).
MAX_BACKOFF = 3600
#: Webhooks sent to at the same time.
PARALLEL = 16
#: Characters of a receiver's answer (or error) kept in the delivery log.
ERROR_CHARS = 300

_json = msgspec.json.Encoder()

DELIVERED = WEBHOOK_DELIVERIES.labels("delivered").inc
FAILED = WEBHOOK_DELIVERIES.labels("failed").inc
GAVE_UP = WEBHOOK_DELIVERIES.labels("gave_up").inc

_CLAIM = """
WITH due AS (
    SELECT d.env_id, d.id FROM webhook_deliveries d
    JOIN webhooks w ON w.env_id = d.env_id AND w.id = d.webhook_id AND w.active
    WHERE d.status = 'pending' AND d.next_attempt_at <= now()
    ORDER BY d.next_attempt_at, d.id
    LIMIT $1
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE webhook_deliveries d SET next_attempt_at = now() + make_interval(secs => $2)
FROM due, webhooks w
WHERE d.env_id = due.env_id AND d.id = due.id AND w.env_id = d.env_id AND w.id = d.webhook_id
RETURNING d.env_id, d.id, d.webhook_id, d.change_id, d.payload, d.attempts, w.url, w.secret
"""

# The erase exits' userId is blanked once the delivery is final.
_FINAL_PAYLOAD = """CASE WHEN d.payload ->> 'cause' = 'erase'
                         THEN jsonb_set(d.payload, '{userId}', 'null') ELSE d.payload END"""

_DELIVERED = f"""
UPDATE webhook_deliveries d
SET status = 'delivered', attempts = d.attempts + 1, last_status = x.s, last_error = NULL,
    delivered_at = now(), payload = {_FINAL_PAYLOAD}
FROM unnest($1::bigint[], $2::bigint[], $3::int[]) AS x(e, i, s)
WHERE d.env_id = x.e AND d.id = x.i AND d.status = 'pending'
"""

_FAILED = f"""
UPDATE webhook_deliveries d
SET attempts = d.attempts + 1, last_status = x.s, last_error = x.err,
    next_attempt_at = now() + make_interval(secs => x.wait),
    status = CASE WHEN d.attempts + 1 >= $6 THEN 'failed' ELSE 'pending' END,
    payload = CASE WHEN d.attempts + 1 >= $6 THEN {_FINAL_PAYLOAD} ELSE d.payload END
FROM unnest($1::bigint[], $2::bigint[], $3::int[], $4::text[], $5::float8[])
     AS x(e, i, s, err, wait)
WHERE d.env_id = x.e AND d.id = x.i AND d.status = 'pending'
"""

# Not attempted (an earlier delivery of the same webhook failed, or the budget ran out).
_RELEASED = """
UPDATE webhook_deliveries d SET next_attempt_at = now() + make_interval(secs => x.wait)
FROM unnest($1::bigint[], $2::bigint[], $3::float8[]) AS x(e, i, wait)
WHERE d.env_id = x.e AND d.id = x.i AND d.status = 'pending'
"""


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Segments-Signature`` value of ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def backoff(attempts: int) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones: 2^attempts capped at
    :data:`MAX_BACKOFF`, the second half of it random (so failing receivers are not all
    retried at the same instant)."""
    base = float(min(2 ** min(attempts, 30), MAX_BACKOFF))
    return base / 2 + random.uniform(0, base / 2)


Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]


class PinnedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that resolves each request's host itself, refuses it when any of
    its addresses is blocked (unless ``allow_private``), and connects to those very addresses
    (in the resolver's order, the next when one refuses the connection): the ``Host`` header,
    TLS SNI and certificate check still use the name.

    Connections are pooled per host name, never per address only, so a connection opened
    (and TLS-verified) for one name never carries a request for another name on the same
    address. ``resolver`` and ``verify`` are there for tests."""

    def __init__(
        self,
        *,
        allow_private: bool,
        resolver: Resolver = resolve,
        verify: ssl.SSLContext | None = None,
    ) -> None:
        self.allow_private = allow_private
        self._resolve = resolver
        self._verify = verify
        self._pools: dict[tuple[str, str, int], httpx.AsyncHTTPTransport] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        host = url.raw_host.decode("ascii")
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            addresses = await self._resolve(host, port)
        except (OSError, UnicodeError) as exc:
            raise httpx.ConnectError(f"cannot resolve {host}: {exc}", request=request) from exc
        if not self.allow_private:
            check_addresses(host, addresses)
        pool = self._pools.get((url.scheme, host, port))
        if pool is None:
            if self._verify is None:
                self._verify = httpx.create_ssl_context()  # certifi, as httpx by default
            pool = httpx.AsyncHTTPTransport(verify=self._verify, trust_env=False)
            self._pools[(url.scheme, host, port)] = pool
        refused: httpx.ConnectError | None = None
        for ip in addresses:
            pinned = httpx.Request(
                request.method,
                url.copy_with(host=str(ip)),
                headers=request.headers,  # Host: the name, as the client set it
                stream=request.stream,
                extensions={**request.extensions, "sni_hostname": host},
            )
            try:
                return await pool.handle_async_request(pinned)
            except httpx.ConnectError as exc:
                refused = exc
        raise refused or httpx.ConnectError(f"{host} has no address", request=request)

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.aclose()
        self._pools.clear()


def webhook_client(settings: Settings) -> httpx.AsyncClient:
    """The HTTP client deliveries are sent with: :class:`PinnedTransport`, no redirects, no
    proxies or credentials from the environment."""
    return httpx.AsyncClient(
        transport=PinnedTransport(allow_private=bool(settings.webhook_allow_private)),
        timeout=TIMEOUT,
        follow_redirects=False,
        trust_env=False,
        headers={"user-agent": "segments-webhooks/1"},
    )


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: what logs may say of a webhook URL, whose user
    info, path or query string may hold credentials."""
    try:
        parts = httpx.URL(url)
        if not parts.scheme or not parts.host:
            return "<invalid url>"
        host = f"[{parts.host}]" if ":" in parts.host else parts.host
        port = f":{parts.port}" if parts.port is not None else ""
        return f"{parts.scheme}://{host}{port}"
    except (httpx.InvalidURL, TypeError, ValueError):
        return "<invalid url>"


class _Outcome(msgspec.Struct):
    env_id: int
    id: int
    ok: bool
    status: int | None = None
    error: str | None = None
    wait: float = 0.0
    attempted: bool = True


async def _post(client: httpx.AsyncClient, row: asyncpg.Record) -> tuple[int | None, str | None]:
    """(HTTP status, error text) of one attempt."""
    body = _json.encode(row["payload"])
    timestamp = str(int(time.time()))
    headers = {
        "content-type": "application/json",
        "x-segments-delivery": str(row["id"]),
        "x-segments-timestamp": timestamp,
        "x-segments-signature": signature(row["secret"], timestamp, body),
        "x-segments-attempt": str(row["attempts"] + 1),
    }
    try:
        async with asyncio.timeout(TIMEOUT):
            async with client.stream("POST", row["url"], content=body, headers=headers) as resp:
                if 200 <= resp.status_code < 300:
                    return resp.status_code, None
                text = b""
                async for chunk in resp.aiter_bytes():
                    text += chunk
                    if len(text) >= ERROR_CHARS:
                        break
                detail = text[:ERROR_CHARS].decode("utf-8", "replace").strip()
                return resp.status_code, f"HTTP {resp.status_code}" + (
                    f": {detail}" if detail else ""
                )
    except TimeoutError:
        return None, f"timed out after {TIMEOUT:g} s"
    except BlockedTarget as exc:
        return None, f"blocked: {exc}"[:ERROR_CHARS]
    except (httpx.HTTPError, OSError) as exc:
        return None, f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]


async def _send_webhook(
    client: httpx.AsyncClient, rows: list[asyncpg.Record], gate: asyncio.Semaphore
) -> list[_Outcome]:
    """Send one webhook's deliveries in change order; stop at the first failure."""
    out: list[_Outcome] = []
    async with gate:
        started = time.monotonic()
        postponed: float | None = None
        for row in rows:
            if postponed is None and time.monotonic() - started > WEBHOOK_BUDGET:
                postponed = 0.0
            if postponed is not None:
                out.append(
                    _Outcome(row["env_id"], row["id"], False, wait=postponed, attempted=False)
                )
                continue
            status, error = await _post(client, row)
            if error is None:
                DELIVERED()
                out.append(_Outcome(row["env_id"], row["id"], True, status=status))
            else:
                (GAVE_UP if row["attempts"] + 1 >= MAX_ATTEMPTS else FAILED)()
                wait = backoff(row["attempts"] + 1)
                error = error.replace(row["url"], origin(row["url"]))
                log.info(
                    "webhook delivery %s to %s failed (attempt %d): %s",
                    row["id"],
                    origin(row["url"]),
                    row["attempts"] + 1,
                    error,
                )
                out.append(_Outcome(row["env_id"], row["id"], False, status, error, wait))
                postponed = wait
    return out


async def _record(pool: asyncpg.Pool, outcomes: list[_Outcome]) -> None:
    done = [o for o in outcomes if o.ok]
    failed = [o for o in outcomes if o.attempted and not o.ok]
    released = [o for o in outcomes if not o.attempted]
    async with pool.acquire() as conn, conn.transaction():
        if done:
            await conn.execute(
                _DELIVERED,
                [o.env_id for o in done],
                [o.id for o in done],
                [o.status for o in done],
            )
        if failed:
            await conn.execute(
                _FAILED,
                [o.env_id for o in failed],
                [o.id for o in failed],
                [o.status for o in failed],
                [o.error for o in failed],
                [o.wait for o in failed],
                MAX_ATTEMPTS,
            )
        if released:
            await conn.execute(
                _RELEASED,
                [o.env_id for o in released],
                [o.id for o in released],
                [o.wait for o in released],
            )


async def deliver_batch(pool: asyncpg.Pool, client: httpx.AsyncClient) -> list[int]:
    """Claim and send one batch of due deliveries; returns the ids attempted (empty when
    nothing was due)."""
    rows = await pool.fetch(_CLAIM, BATCH, LEASE_SECONDS)
    if not rows:
        return []
    by_webhook: dict[tuple[int, int], list[asyncpg.Record]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: r["change_id"]):
        by_webhook[(row["env_id"], row["webhook_id"])].append(row)
    gate = asyncio.Semaphore(PARALLEL)
    results = await asyncio.gather(
        *(_send_webhook(client, group, gate) for group in by_webhook.values())
    )
    outcomes = [o for group in results for o in group]
    await _record(pool, outcomes)
    return [o.id for o in outcomes if o.attempted]


async def deliver_webhooks(ctx: dict[str, Any]) -> int:
    """Job: send due webhook deliveries for up to :data:`JOB_SECONDS`; returns how many
    attempts were made. ``ctx`` needs ``pool`` and ``settings``."""
    pool: asyncpg.Pool = ctx["pool"]
    deadline = time.monotonic() + JOB_SECONDS
    attempts = 0
    client: httpx.AsyncClient | None = None
    try:
        while time.monotonic() < deadline:
            if client is None:
                due = await pool.fetchval(
                    """SELECT EXISTS (SELECT 1 FROM webhook_deliveries
                                      WHERE status = 'pending' AND next_attempt_at <= now())"""
                )
                if not due:
                    break
                client = webhook_client(ctx["settings"])
            sent = await deliver_batch(pool, client)
            if not sent:
                break
            attempts += len(sent)
    finally:
        if client is not None:
            await client.aclose()
    if attempts:
        log.info("webhooks: %d delivery attempts", attempts)
    return attempts
