"""How the HTTP services are served: the heap is frozen once the app has started."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar, get
from litestar.testing import AsyncTestClient

from services.http_server import freeze_after_startup


@get("/frozen")
async def frozen() -> dict[str, int]:
    return {"frozen": gc.get_freeze_count()}


async def test_the_heap_is_frozen_after_the_lifespan_has_opened_everything() -> None:
    opened: list[object] = []
    frozen_at_open: list[int] = []

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        frozen_at_open.append(gc.get_freeze_count())
        opened.append({"pool": "what a lifespan opens"})
        yield

    app = Litestar(route_handlers=[frozen], lifespan=[lifespan])
    freeze_after_startup(app)
    gc.unfreeze()
    try:
        async with AsyncTestClient(app=app) as client:
            resp = await client.get("/frozen")
        assert frozen_at_open == [0]  # not before the lifespan ran
        assert resp.json()["frozen"] > 0
        # what the lifespan opened is among the frozen objects: no collection walks it again
        assert all(o is not opened for o in gc.get_objects())
    finally:
        gc.unfreeze()  # the test process goes on collecting as before
