"""The error handling every service shares: one shape, a request id for the unexpected."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import pytest
from litestar import Litestar, get
from litestar.params import FromPath, FromQuery
from litestar.testing import AsyncTestClient

from shared.http import EXCEPTION_HANDLERS, refuse_nul
from shared.json_guard import MAX_DEPTH, json_problem


@get("/boom")
async def boom() -> None:
    raise KeyError("a bug")


@get("/deep")
async def deep() -> None:
    raise RecursionError("maximum recursion depth exceeded")


@get("/items/{item_id:str}")
async def item(item_id: FromPath[str], limit: FromQuery[int] = 1) -> dict[str, Any]:
    return {"item": item_id, "limit": limit}


def _app() -> Litestar:
    return Litestar(
        [boom, deep, item], exception_handlers=dict(EXCEPTION_HANDLERS), middleware=[refuse_nul]
    )


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_unhandled_errors_are_logged_with_a_request_id() -> None:
    # a handler of our own: litestar's logging set-up replaces the root logger's (caplog's)
    caplog = _Records()
    logging.getLogger("shared.http").addHandler(caplog)
    try:
        await _unhandled_errors(caplog)
    finally:
        logging.getLogger("shared.http").removeHandler(caplog)


async def _unhandled_errors(caplog: _Records) -> None:
    async with AsyncTestClient(app=_app()) as client:
        resp = await client.get("/boom")
        assert resp.status_code == 500
        request_id = resp.headers["x-request-id"]
        assert resp.json() == {
            "error": f"internal error; quote request id {request_id} to the operator",
            "field": None,
        }
        assert any(request_id in r.getMessage() and r.exc_info for r in caplog.records)
        # what only bad input provokes is a 4xx, and logged too
        resp = await client.get("/deep")
        assert resp.status_code == 422
        assert resp.json()["field"] == "body"
        assert any(resp.headers["x-request-id"] in r.getMessage() for r in caplog.records)


async def test_nul_in_paths_and_query_strings_is_a_400_naming_it() -> None:
    async with AsyncTestClient(app=_app()) as client:
        resp = await client.get("/items/a%00b")
        assert (resp.status_code, resp.json()["field"]) == (400, "itemId")
        resp = await client.get("/items/a?limit=%00")
        assert (resp.status_code, resp.json()["field"]) == (400, "limit")
        resp = await client.get("/items/a?limit=abc")
        assert (resp.status_code, resp.json()["field"]) == (400, "limit")
        assert (await client.get("/items/a%20b?limit=2")).json() == {"item": "a b", "limit": 2}
        resp = await client.get("/nowhere")
        assert (resp.status_code, resp.json()["field"]) == (404, "path")


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"a": "x\x00"}, "a"),
        ({"a\x00": 1}, "a\\u0000"),
        ({"a": [1, 2**63]}, "a[1]"),
        ({"a": [1, -(2**63) - 1]}, "a[1]"),
        ({"a": {"b": []}}, None),
        ({"a": 2**63 - 1, "b": -(2**63), "c": 1e308, "d": "1234567890123456789012"}, None),
    ],
)
def test_json_problems_name_the_field(value: Any, field: str | None) -> None:
    problem = json_problem(msgspec.json.encode(value))
    assert (problem[0] if problem else None) == field


def test_depth_limit() -> None:
    assert json_problem(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is None
    assert json_problem(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1)) is not None
    assert json_problem(b"[" * 5000 + b"]" * 5000) == (
        "body",
        f"nested deeper than {MAX_DEPTH} levels",
    )
