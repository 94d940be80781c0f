"""Browsers on any origin can call ingest and query (the web SDK does)."""

from __future__ import annotations

from tests.e2e.conftest import Api


async def test_query_answers_a_preflight_and_exposes_its_answer(api: Api) -> None:
    preflight = await api.query.options(
        "/v1/users/u/segments/all-users",
        headers={
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status_code in (200, 204)
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    resp = await api.query.get(
        "/v1/users/u/segments/all-users", headers={"Origin": "https://app.example.com"}
    )
    assert resp.headers["access-control-allow-origin"] == "*"


async def test_ingest_exposes_retry_after_to_pages(api: Api) -> None:
    resp = await api.ingest.post(
        "/v1/identify",
        content=b'{"userId": "cors", "traits": {}, "writeKey": "'
        + api.env.writeKey.encode()
        + b'"}',
        headers={"Origin": "https://app.example.com", "Content-Type": "text/plain"},
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["access-control-allow-origin"] == "*"
    assert "retry-after" in resp.headers["access-control-expose-headers"].lower()
