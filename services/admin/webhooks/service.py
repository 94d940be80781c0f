"""Webhooks in PostgreSQL: subscriptions to segment entries and exits, and their delivery log.

Deliveries are written by whoever records a membership change, in the same statement
(``shared.membership.record_changes``: an outbox), and sent by the worker
(``services.worker.webhooks``), which reads the webhook's current URL and secret at each
attempt: a PATCHed URL or a rotated secret applies to pending deliveries too. A paused
webhook (``active: false``) is sent nothing and queues nothing new.

Unless ``SEGMENTS_WEBHOOK_ALLOW_PRIVATE`` is set, a URL is refused (422) when its host is
``localhost`` or an address webhooks may not call (``shared.webhook_targets``), or when it
resolves to one when saved. A name that does not resolve within :data:`RESOLVE_SECONDS` is
accepted: DNS changes (a receiver is often set up after its webhook), and the worker checks
every address again at each delivery, which is where the protection really lies.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence
from urllib.parse import urlsplit

import asyncpg
from msgspec import UNSET

from services.admin.segments.service import as_id
from services.admin.webhooks.schemas import (
    Delivery,
    SegmentSummary,
    Webhook,
    WebhookCreate,
    WebhookUpdate,
    WebhookWithSecret,
)
from shared.db import Conn
from shared.http import ApiError
from shared.webhook_targets import BlockedTarget, check_addresses, is_localhost_name, resolve

#: Seconds a URL's host name may take to resolve when it is saved.
RESOLVE_SECONDS = 2.0

_COLUMNS = "id, url, secret, segment_ids, on_entered, on_exited, active, created_at"


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def check_url(url: str) -> str:
    """``url`` when it is an absolute http(s) URL with a host; else 422."""
    url = url.strip()
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        raise ApiError(422, f"url: {url!r} is not a URL", "url") from None
    if parts.scheme not in ("http", "https"):
        raise ApiError(422, "url: only http and https URLs can receive webhooks", "url")
    if not parts.hostname or not port_ok or any(c.isspace() for c in url):
        raise ApiError(422, f"url: {url!r} has no usable host", "url")
    if parts.fragment:
        raise ApiError(422, "url: must not have a #fragment", "url")
    return url


async def check_target(url: str, *, allow_private: bool) -> str:
    """``url`` (as :func:`check_url` answers it) when webhooks may call its host; else 422:
    ``localhost``, a blocked literal address, or a name resolving to one. Unless
    ``allow_private``."""
    url = check_url(url)
    if allow_private:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if is_localhost_name(host):
        raise ApiError(
            422, f"url: {host} is this machine; webhooks can only call public addresses", "url"
        )
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        async with asyncio.timeout(RESOLVE_SECONDS):
            addresses = await resolve(host, port)
    except (OSError, TimeoutError, UnicodeError):
        return url  # not resolvable now: the worker checks at each delivery
    try:
        check_addresses(host, addresses)
    except BlockedTarget as exc:
        raise ApiError(422, f"url: {exc}; webhooks can only call public addresses", "url") from None
    return url


def _events(events: Sequence[str] | None) -> tuple[bool, bool]:
    if events is None:
        return True, True
    if not events:
        raise ApiError(422, 'events: give "entered", "exited" or both', "events")
    return "entered" in events, "exited" in events


async def _segment_ids(
    conn: Conn, env_id: int, refs: Sequence[str | int] | None
) -> list[int] | None:
    """Ids of the segments ``refs`` names (keys or ids); None means every segment."""
    if refs is None:
        return None
    if not refs:
        raise ApiError(
            422, "segments: name at least one segment (or omit it for every segment)", "segments"
        )
    texts = [str(r) for r in refs]
    rows = await conn.fetch(
        """SELECT x.ref, coalesce(k.id, i.id) AS id
           FROM unnest($2::text[], $3::bigint[]) AS x(ref, as_id)
           LEFT JOIN segments k ON k.env_id = $1 AND k.key = x.ref
           LEFT JOIN segments i ON i.env_id = $1 AND i.id = x.as_id""",
        env_id,
        texts,
        [as_id(t) for t in texts],
    )
    found = {r["ref"]: r["id"] for r in rows}
    ids: list[int] = []
    for i, text in enumerate(texts):
        if found.get(text) is None:
            raise ApiError(
                422, f"segments[{i}]: no segment with key or id {text!r}", f"segments[{i}]"
            )
        if found[text] not in ids:
            ids.append(found[text])
    return ids


async def _to_webhook(conn: Conn, row: asyncpg.Record) -> Webhook:
    segments: list[SegmentSummary] | None = None
    if row["segment_ids"] is not None:
        rows = await conn.fetch(
            """SELECT id, key, name FROM segments WHERE env_id = $1 AND id = ANY($2::bigint[])
               ORDER BY array_position($2::bigint[], id)""",
            row["env_id"],
            row["segment_ids"],
        )
        segments = [SegmentSummary(str(r["id"]), r["key"], r["name"]) for r in rows]
    events = [e for e, on in (("entered", row["on_entered"]), ("exited", row["on_exited"])) if on]
    return Webhook(
        id=str(row["id"]),
        url=row["url"],
        segments=segments,
        events=events,
        active=row["active"],
        createdAt=row["created_at"],
    )


def _with_secret(hook: Webhook, secret: str) -> WebhookWithSecret:
    return WebhookWithSecret(
        id=hook.id,
        url=hook.url,
        segments=hook.segments,
        events=hook.events,
        active=hook.active,
        createdAt=hook.createdAt,
        secret=secret,
    )


def _hook_id(ref: str) -> int:
    found = as_id(ref)
    if found is None:
        raise ApiError(404, f"webhook: no webhook with id {ref!r}", "webhook")
    return found


async def _row(conn: Conn, env_id: int, ref: str, *, lock: bool = False) -> asyncpg.Record:
    sql = f"SELECT env_id, {_COLUMNS} FROM webhooks WHERE env_id = $1 AND id = $2"
    row = await conn.fetchrow(sql + (" FOR UPDATE" if lock else ""), env_id, _hook_id(ref))
    if row is None:
        raise ApiError(404, f"webhook: no webhook with id {ref!r}", "webhook")
    return row


async def create_webhook(
    conn: Conn, env_id: int, body: WebhookCreate, *, allow_private: bool
) -> WebhookWithSecret:
    """Save a new webhook; ``allow_private``: ``settings.webhook_allow_private``."""
    url = await check_target(body.url, allow_private=allow_private)
    on_entered, on_exited = _events(body.events)
    segment_ids = await _segment_ids(conn, env_id, body.segments)
    secret = new_secret()
    row = await conn.fetchrow(
        f"""INSERT INTO webhooks (env_id, url, secret, segment_ids, on_entered, on_exited, active)
            VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING env_id, {_COLUMNS}""",
        env_id,
        url,
        secret,
        segment_ids,
        on_entered,
        on_exited,
        body.active,
    )
    assert row is not None
    return _with_secret(await _to_webhook(conn, row), secret)


async def list_webhooks(conn: Conn, env_id: int) -> list[Webhook]:
    rows = await conn.fetch(
        f"SELECT env_id, {_COLUMNS} FROM webhooks WHERE env_id = $1 ORDER BY id", env_id
    )
    return [await _to_webhook(conn, r) for r in rows]


async def read_webhook(conn: Conn, env_id: int, ref: str) -> Webhook:
    return await _to_webhook(conn, await _row(conn, env_id, ref))


async def update_webhook(
    conn: Conn, env_id: int, ref: str, patch: WebhookUpdate, *, allow_private: bool
) -> Webhook:
    """Change the fields ``patch`` carries; ``allow_private`` as for :func:`create_webhook`."""
    # checked (DNS included) before the row is locked
    new_url = (
        None if patch.url is UNSET else await check_target(patch.url, allow_private=allow_private)
    )
    async with conn.transaction():
        row = await _row(conn, env_id, ref, lock=True)
        url = row["url"] if new_url is None else new_url
        on_entered, on_exited = row["on_entered"], row["on_exited"]
        if patch.events is not UNSET:
            on_entered, on_exited = _events(patch.events)
        segment_ids = row["segment_ids"]
        if patch.segments is not UNSET:
            segment_ids = await _segment_ids(conn, env_id, patch.segments)
        active = row["active"] if patch.active is UNSET else patch.active
        updated = await conn.fetchrow(
            f"""UPDATE webhooks SET url = $3, segment_ids = $4, on_entered = $5, on_exited = $6,
                       active = $7
                WHERE env_id = $1 AND id = $2 RETURNING env_id, {_COLUMNS}""",
            env_id,
            row["id"],
            url,
            segment_ids,
            on_entered,
            on_exited,
            active,
        )
        assert updated is not None
        return await _to_webhook(conn, updated)


async def rotate_secret(conn: Conn, env_id: int, ref: str) -> WebhookWithSecret:
    """A new signing secret; deliveries from now on (pending ones included) are signed with it."""
    row = await _row(conn, env_id, ref)
    secret = new_secret()
    updated = await conn.fetchrow(
        f"""UPDATE webhooks SET secret = $3 WHERE env_id = $1 AND id = $2
            RETURNING env_id, {_COLUMNS}""",
        env_id,
        row["id"],
        secret,
    )
    if updated is None:
        raise ApiError(404, f"webhook: no webhook with id {ref!r}", "webhook")
    return _with_secret(await _to_webhook(conn, updated), secret)


async def delete_webhook(conn: Conn, env_id: int, ref: str) -> None:
    """Delete a webhook and (by cascade) its deliveries, pending ones included."""
    deleted = await conn.fetchval(
        "DELETE FROM webhooks WHERE env_id = $1 AND id = $2 RETURNING id", env_id, _hook_id(ref)
    )
    if deleted is None:
        raise ApiError(404, f"webhook: no webhook with id {ref!r}", "webhook")


def _to_delivery(r: asyncpg.Record) -> Delivery:
    return Delivery(
        id=str(r["id"]),
        changeId=str(r["change_id"]),
        status=r["status"],
        attempts=r["attempts"],
        lastStatus=r["last_status"],
        lastError=r["last_error"],
        nextAttemptAt=r["next_attempt_at"] if r["status"] == "pending" else None,
        deliveredAt=r["delivered_at"],
        createdAt=r["created_at"],
        payload=r["payload"],
    )


_DELIVERY_COLUMNS = """id, change_id, status, attempts, last_status, last_error,
       next_attempt_at, delivered_at, created_at, payload"""


async def deliveries_page(
    conn: Conn, env_id: int, ref: str, limit: int, before: int, status: str | None
) -> tuple[list[Delivery], int | None]:
    """Up to ``limit`` deliveries of a webhook with id < ``before`` (0: from the newest),
    newest first, optionally of one ``status``; and the id to continue before."""
    row = await _row(conn, env_id, ref)
    if status is not None and status not in ("pending", "delivered", "failed"):
        raise ApiError(400, "status: expected pending, delivered or failed", "status")
    rows = await conn.fetch(
        f"""SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries
            WHERE env_id = $1 AND webhook_id = $2 AND ($3::bigint = 0 OR id < $3)
              AND ($4::text IS NULL OR status = $4)
            ORDER BY id DESC LIMIT $5""",
        env_id,
        row["id"],
        before,
        status,
        limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return [_to_delivery(r) for r in rows], (rows[-1]["id"] if more else None)


async def retry_delivery(conn: Conn, env_id: int, ref: str, delivery: str) -> Delivery:
    """Send a delivery again soon (a failed one after its receiver was fixed): pending, due
    now, attempts counted afresh. A delivered one is left alone (409)."""
    row = await _row(conn, env_id, ref)
    delivery_id = as_id(delivery)
    found = await conn.fetchrow(
        "SELECT status FROM webhook_deliveries WHERE env_id = $1 AND webhook_id = $2 AND id = $3",
        env_id,
        row["id"],
        delivery_id,
    )
    if found is None:
        raise ApiError(404, f"delivery: no delivery {delivery!r} of this webhook", "delivery")
    if found["status"] == "delivered":
        raise ApiError(409, "delivery: already delivered", "delivery")
    updated = await conn.fetchrow(
        f"""UPDATE webhook_deliveries
            SET status = 'pending', attempts = 0, next_attempt_at = now()
            WHERE env_id = $1 AND id = $2 AND status <> 'delivered'
            RETURNING {_DELIVERY_COLUMNS}""",
        env_id,
        delivery_id,
    )
    if updated is None:
        raise ApiError(409, "delivery: already delivered", "delivery")
    return _to_delivery(updated)
