"""What an operator sees, on the real running services: /metrics on every service (protected
like the admin API), request counts and latencies by route template, the worker's figures
after a drain, the deployment's state on admin's /metrics, request ids echoed and logged."""

from __future__ import annotations

import json
import secrets

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.environments import EnvironmentKeys
from shared.settings import Settings
from tests.conftest import ServiceStack
from tests.e2e.conftest import Api, eventually


def sample(text: str, name: str, **labels: str) -> float:
    """The value of sample ``name`` with exactly ``labels`` in an exposition (0 if absent)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return 0.0


def label_values(text: str, name: str, label: str) -> set[str]:
    return {
        s.labels[label]
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and label in s.labels
    }


def worker_url(stack: ServiceStack) -> str:
    return f"http://127.0.0.1:{stack.settings.worker_metrics_port}"


async def scrape(url: str, key: str) -> str:
    async with httpx.AsyncClient(timeout=30) as client:
        resp = await client.get(url + "/metrics", headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    return resp.text


@pytest.mark.parametrize("service", ["ingest", "query", "admin", "worker"])
async def test_metrics_need_a_secret_key(
    stack: ServiceStack, env: EnvironmentKeys, service: str
) -> None:
    url = worker_url(stack) if service == "worker" else stack.url(service)
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        resp = await client.get("/metrics")
        assert resp.status_code == 401
        assert resp.json()["field"] == "authorization"
        unknown = {"Authorization": f"Bearer sk_{secrets.token_hex(16)}"}
        assert (await client.get("/metrics", headers=unknown)).status_code == 401
        # the write key is public (it is in web pages): refused
        resp = await client.get("/metrics", headers={"Authorization": f"Bearer {env.writeKey}"})
        assert resp.status_code == 403
        assert "segments_" not in resp.text
        basic = await client.get("/metrics", auth=(env.secretKey, ""))
        assert basic.status_code == 200
        assert "process_cpu_seconds_total" in basic.text


async def test_the_metrics_token_reads_metrics_and_nothing_else(
    settings: Settings, env: EnvironmentKeys
) -> None:
    token = secrets.token_urlsafe(24)
    stack = ServiceStack(settings)
    try:
        stack.start("query", metrics_token=token)
        async with httpx.AsyncClient(base_url=stack.url("query"), timeout=30) as client:
            bearer = {"Authorization": f"Bearer {token}"}
            assert (await client.get("/metrics", headers=bearer)).status_code == 200
            assert (await client.get("/v1/users/u1/segments", headers=bearer)).status_code == 401
            wrong = {"Authorization": f"Bearer {token}x"}
            assert (await client.get("/metrics", headers=wrong)).status_code == 401
            secret = {"Authorization": f"Bearer {env.secretKey}"}
            assert (await client.get("/metrics", headers=secret)).status_code == 200
    finally:
        stack.stop_all()


async def test_requests_are_counted_and_timed_by_route_template(api: Api) -> None:
    url, key = api.stack.url("query"), api.env.secretKey
    route = "/v1/users/{user_id}/segments"
    before = await scrape(url, key)
    user = f"metrics-{secrets.token_hex(4)}"
    for _ in range(3):
        assert (await api.query.get(f"/v1/users/{user}/segments")).status_code == 200
    assert (await api.query.get(f"/v1/users/{user}/segments/no-such")).status_code == 404
    assert (await api.query.get(f"/no/such/path/{user}")).status_code == 404
    after = await scrape(url, key)

    def moved(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert moved("segments_http_requests_total", route=route, method="GET", status="200") == 3
    assert moved("segments_http_request_duration_seconds_count", route=route, method="GET") == 3
    assert moved("segments_http_request_duration_seconds_sum", route=route, method="GET") > 0
    assert (
        moved(
            "segments_http_requests_total",
            route="/v1/users/{user_id}/segments/{segment}",
            method="GET",
            status="404",
        )
        == 1
    )
    assert moved("segments_http_requests_total", route="unmatched", method="GET", status="404") == 1
    routes = label_values(after, "segments_http_requests_total", "route")
    assert not [r for r in routes if user in r]  # never the raw path
    # a refill after the first miss (an unknown user's empty set is cached too)
    assert moved("segments_cache_misses_total") >= 1
    assert moved("segments_cache_refills_total") >= 1
    # and the two reads after it found the refilled set
    assert moved("segments_cache_hits_total") >= 2


async def test_worker_figures_move_after_a_drain(api: Api) -> None:
    url, key = worker_url(api.stack), api.env.secretKey
    before = await scrape(url, key)
    for i in range(5):
        await api.identify(f"drained-{i}", {"plan": "pro"})

    async def drained() -> bool:  # (in one round or several)
        after = await scrape(url, key)
        rows = sample(after, "segments_worker_inbox_rows_total")
        return rows - sample(before, "segments_worker_inbox_rows_total") >= 5

    await eventually(drained)
    after = await scrape(url, key)
    assert sample(after, "segments_worker_drain_rounds_total") > sample(
        before, "segments_worker_drain_rounds_total"
    )


async def test_admin_metrics_carry_the_deployments_state(api: Api) -> None:
    text = await scrape(api.stack.url("admin"), api.env.secretKey)
    assert sample(text, "segments_backlog_read_ok") == 1
    for name in (
        "segments_inbox_depth",
        "segments_inbox_lag_seconds",
        "segments_dead_letters",
        "segments_recomputes_queued",
        "segments_recomputes_failed",
        "segments_webhook_deliveries_failing",
        "segments_cache_outbox_overdue",
    ):
        assert f"\n{name} " in text, name


async def test_request_ids_are_echoed_and_logged_as_json(
    settings: Settings, env: EnvironmentKeys
) -> None:
    stack = ServiceStack(settings)
    stack.logs = stack.logs / f"json-{secrets.token_hex(3)}"
    stack.logs.mkdir(parents=True)
    try:
        stack.start("query", log_format="json", access_log=True)
        async with httpx.AsyncClient(
            base_url=stack.url("query"),
            headers={"Authorization": f"Bearer {env.writeKey}"},
            timeout=30,
        ) as client:
            mine = "trace-" + secrets.token_hex(8)
            resp = await client.get("/v1/users/u1/segments", headers={"X-Request-Id": mine})
            assert resp.status_code == 200 and resp.headers["x-request-id"] == mine
            # an id that is no sane token is replaced, not logged
            resp = await client.get("/v1/users/u1/segments", headers={"X-Request-Id": "a b\tc"})
            made = resp.headers["x-request-id"]
            assert made and " " not in made
            refused = await client.get("/v1/users/u1/segments", headers={"Authorization": "x"})
            assert refused.status_code == 401 and refused.headers["x-request-id"]
    finally:
        stack.stop_all()
    lines = [json.loads(line) for line in (stack.logs / "query.log").read_text().splitlines()]
    access = {line["requestId"]: line for line in lines if line["logger"] == "segments.access"}
    assert access[mine]["route"] == "/v1/users/{user_id}/segments"
    assert access[mine]["status"] == 200 and access[mine]["service"] == "query"
    assert access[made]["status"] == 200
    assert not [line for line in lines if "a b" in json.dumps(line)]


async def test_the_worker_serves_metrics_only(stack: ServiceStack, env: EnvironmentKeys) -> None:
    secret = {"Authorization": f"Bearer {env.secretKey}"}
    async with httpx.AsyncClient(base_url=worker_url(stack), timeout=30) as client:
        resp = await client.get("/health", headers=secret)
        assert resp.status_code == 404 and resp.json()["field"] == "path"
        resp = await client.post("/metrics", headers=secret)
        assert resp.status_code == 405 and resp.json()["field"] == "method"
        resp = await client.get("/metrics?x=1", headers=secret)
        assert resp.status_code == 200 and "segments_worker_inbox_rows_total" in resp.text
