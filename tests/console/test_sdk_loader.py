"""The JavaScript SDK's loader snippet in a real page in Chromium, against the real stack:
the page is served from 127.0.0.1 as a customer's site would serve it, the snippet loads
segments.js, identifies a user, and isInSegment answers true once the worker has computed
the membership."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext

from services.embedded import free_port
from tests.conftest import ROOT
from tests.e2e.conftest import Api

SDK = ROOT / "sdk-contract" / "js"


@pytest.fixture
def site(tmp_path: Path, api: Api) -> Iterator[str]:
    """A customer's page with the loader snippet (as published) pointing at segments.js."""
    snippet = (
        (SDK / "snippet.js")
        .read_text()
        .replace("https://YOUR-CDN.example.com/segments.js", "/segments.js")
    )
    (tmp_path / "segments.js").write_text((SDK / "segments.js").read_text())
    (tmp_path / "index.html").write_text(
        f"""<!doctype html><html><head><meta charset="utf-8"><title>shop</title>
<script>{snippet}
segments.init({{writeKey: "{api.env.writeKey}", host: "{api.stack.url("ingest")}",
                queryHost: "{api.stack.url("query")}"}});
</script></head><body><h1>A customer's page</h1></body></html>"""
    )
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/index.html"
    finally:
        server.shutdown()
        server.server_close()


async def test_the_loader_snippet_identifies_and_is_in_segment_answers_true(
    context: BrowserContext, api: Api, site: str
) -> None:
    await api.create_segment("sdk-pro", {"attribute": "plan", "op": "is", "value": "pro"})
    page = await context.new_page()
    await page.goto(site)
    answer = await page.evaluate(
        """async () => {
          await segments.identify("sdk-user", { plan: "pro" });
          const deadline = Date.now() + 30000;
          for (;;) {
            if (await segments.isInSegment("sdk-pro")) return true;
            if (Date.now() > deadline) return false;
            await new Promise((r) => setTimeout(r, 300));
          }
        }"""
    )
    assert answer is True
    assert await api.member("sdk-user", "sdk-pro")
