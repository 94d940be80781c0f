"""Raw HTTP/1.1 keep-alive connections for the load generator.

Why not httpx or aiohttp: their per-request cost in Python is several times that of the servers
under test, so the client would be what we measure. Here a request is a pre-built (or cheaply
built) byte string written to a transport, and a response is parsed only as far as its status
line, ``Content-Length`` and body. The servers under test always send ``Content-Length``.
"""

from __future__ import annotations

import asyncio
import time
from typing import cast

import msgspec


class ProtocolError(Exception):
    """The server sent something this minimal client does not parse."""


class Target(msgspec.Struct, frozen=True):
    """Where requests go and with which key."""

    host: str
    port: int
    authorization: str


class Connection(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.lost: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, hence a cast, not a check
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionResetError("server closed the connection")
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(self.lost)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            waiter.set_exception(ProtocolError("response without content-length"))
            return
        stop = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : stop if stop >= 0 else len(head)])
        total = end + 4 + length
        if len(self.buffer) < total:
            return
        body = bytes(self.buffer[end + 4 : total])
        del self.buffer[:total]
        waiter.set_result((int(head[9:12]), body))

    async def request(self, data: bytes) -> tuple[int, bytes]:
        if self.lost is not None or self.transport is None:
            raise self.lost or ConnectionError("not connected")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def connect(host: str, port: int) -> Connection:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(Connection, host, port)
    return protocol


def get_request(target: Target, path: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {target.host}:{target.port}\r\n"
        f"Authorization: {target.authorization}\r\n\r\n"
    ).encode()


def post_request(target: Target, path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {target.host}:{target.port}\r\n"
        f"Authorization: {target.authorization}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def identify_message(user_id: str, plan: str) -> dict[str, object]:
    return {
        "type": "identify",
        "userId": user_id,
        "messageId": f"m-{user_id}",
        "traits": {"plan": plan, "email": f"{user_id}@example.com"},
    }


class Pool:
    """Keep-alive connections shared by many tasks: idle ones are reused, more are opened when
    all are busy (an open loop must not hold requests back), up to ``limit``; past that a
    request waits, and since latency counts from the scheduled send, the wait is measured."""

    #: Seconds a connection may sit idle and still be reused: the servers (uvicorn) close
    #: keep-alive connections after 5 s, and a request sent on one they closed fails.
    MAX_IDLE = 3.0

    def __init__(self, host: str, port: int, limit: int) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[Connection, float]] = []
        self.slots = asyncio.Semaphore(limit)

    async def _take(self) -> Connection:
        while self.idle:
            conn, since = self.idle.pop()
            if time.monotonic() - since < self.MAX_IDLE:
                return conn
            conn.close()
        return await connect(self.host, self.port)

    async def request(self, data: bytes) -> tuple[int, bytes]:
        async with self.slots:
            conn = await self._take()
            try:
                result = await conn.request(data)
            except BaseException:
                conn.close()
                raise
            self.idle.append((conn, time.monotonic()))
            return result

    async def prime(self, count: int) -> None:
        now = time.monotonic()
        self.idle.extend([(await connect(self.host, self.port), now) for _ in range(count)])

    def close(self) -> None:
        for conn, _ in self.idle:
            conn.close()
