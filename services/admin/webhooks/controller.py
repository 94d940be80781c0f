"""``/v1/webhooks``: thin handlers over :mod:`services.admin.webhooks.service`."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, delete, get, patch, post
from litestar.params import FromPath, FromQuery

from services.admin.bodies import decode_body
from services.admin.segments.controller import page_args
from services.admin.state import Admin, Env
from services.admin.webhooks import service
from services.admin.webhooks.resync import ResyncResult, resync_webhook
from services.admin.webhooks.schemas import (
    DeliveriesPage,
    Delivery,
    Webhook,
    WebhookList,
    WebhookWithSecret,
    create_decoder,
    update_decoder,
)


class WebhookController(Controller):
    """Subscriptions to segment entries and exits, signed with HMAC-SHA256, and their log."""

    path = "/v1/webhooks"

    @post("/", status_code=201)
    async def create(
        self, request: Request[Any, Any, Any], admin: Admin, env: Env
    ) -> WebhookWithSecret:
        """Subscribe a URL; the answer carries the signing secret (shown only here and when
        rotated). A URL whose host is or resolves to a non-public address is refused (422)
        unless ``SEGMENTS_WEBHOOK_ALLOW_PRIVATE`` is set."""
        body = decode_body(create_decoder, await request.body())
        async with admin.pool.acquire() as conn:
            async with conn.transaction():
                created = await service.create_webhook(
                    conn, env.id, body, allow_private=bool(admin.settings.webhook_allow_private)
                )
            if body.resync:  # the current members, announced as the hook starts (in chunks)
                await resync_webhook(conn, env.id, int(created.id))
        return created

    @post("/{webhook:str}/resync", status_code=202)
    async def resync(self, admin: Admin, env: Env, webhook: FromPath[str]) -> ResyncResult:
        """Queue a ``segment.entered`` delivery with cause ``sync`` for every current member
        of the webhook's segments (identified users)."""
        async with admin.pool.acquire() as conn:
            row = await service.read_webhook(conn, env.id, webhook)
            return await resync_webhook(conn, env.id, int(row.id))

    @get("/")
    async def list_all(self, admin: Admin, env: Env) -> WebhookList:
        async with admin.pool.acquire() as conn:
            return WebhookList(await service.list_webhooks(conn, env.id))

    @get("/{webhook:str}")
    async def read(self, admin: Admin, env: Env, webhook: FromPath[str]) -> Webhook:
        async with admin.pool.acquire() as conn:
            return await service.read_webhook(conn, env.id, webhook)

    @patch("/{webhook:str}")
    async def update(
        self, request: Request[Any, Any, Any], admin: Admin, env: Env, webhook: FromPath[str]
    ) -> Webhook:
        """Change the URL (checked as when created), segments, events or pause
        (``active: false``)."""
        body = decode_body(update_decoder, await request.body())
        async with admin.pool.acquire() as conn:
            return await service.update_webhook(
                conn,
                env.id,
                webhook,
                body,
                allow_private=bool(admin.settings.webhook_allow_private),
            )

    @delete("/{webhook:str}", status_code=204)
    async def remove(self, admin: Admin, env: Env, webhook: FromPath[str]) -> None:
        async with admin.pool.acquire() as conn:
            await service.delete_webhook(conn, env.id, webhook)

    @post("/{webhook:str}/rotate-secret", status_code=200)
    async def rotate(self, admin: Admin, env: Env, webhook: FromPath[str]) -> WebhookWithSecret:
        """A new signing secret, shown in the answer."""
        async with admin.pool.acquire() as conn:
            return await service.rotate_secret(conn, env.id, webhook)

    @get("/{webhook:str}/deliveries")
    async def deliveries(
        self,
        admin: Admin,
        env: Env,
        webhook: FromPath[str],
        limit: FromQuery[int] = 100,
        cursor: FromQuery[str | None] = None,
        status: FromQuery[str | None] = None,
    ) -> DeliveriesPage:
        """The delivery log, newest first (``status`` filters: pending, delivered, failed)."""
        before = page_args(limit, cursor)
        async with admin.pool.acquire() as conn:
            items, next_before = await service.deliveries_page(
                conn, env.id, webhook, limit, before, status
            )
        return DeliveriesPage(items, None if next_before is None else str(next_before))

    @post("/{webhook:str}/deliveries/{delivery:str}/retry", status_code=200)
    async def retry(
        self, admin: Admin, env: Env, webhook: FromPath[str], delivery: FromPath[str]
    ) -> Delivery:
        """Queue a pending or failed delivery to be sent again now."""
        async with admin.pool.acquire() as conn:
            return await service.retry_delivery(conn, env.id, webhook, delivery)
