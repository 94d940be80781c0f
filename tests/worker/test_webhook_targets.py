"""Which addresses webhooks may call (``shared.webhook_targets``), and the worker's transport
that connects only to the addresses it checked (``services.worker.webhooks.PinnedTransport``),
against real local HTTP and TLS servers. A fake resolver stands in for DNS, which these
tests cannot control: it answers names no real resolver knows, so a request that arrives
proves the connection went to the answered address."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from ipaddress import IPv4Address, IPv4Network, IPv6Address, ip_address
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.worker.webhooks import PinnedTransport
from shared.webhook_targets import BlockedTarget, IPAddress, blocked_kind
from tests.admin.conftest import Receiver

ipv4 = st.integers(0, 2**32 - 1).map(IPv4Address)


@given(ipv4)
def test_ipv6_forms_of_an_ipv4_address_are_judged_as_it(ip: IPv4Address) -> None:
    mapped = IPv6Address(f"::ffff:{ip}")
    sixtofour = IPv6Address((0x2002 << 112) | (int(ip) << 80))
    nat64 = IPv6Address(f"64:ff9b::{ip}")
    assert (
        blocked_kind(mapped) == blocked_kind(sixtofour) == blocked_kind(nat64) == blocked_kind(ip)
    )


@given(st.one_of(ipv4, st.integers(0, 2**128 - 1).map(IPv6Address)))
def test_only_global_unicast_addresses_pass(ip: IPAddress) -> None:
    if blocked_kind(ip) is None:
        assert not ip.is_multicast and not ip.is_loopback and not ip.is_link_local
        assert ip.is_global or isinstance(ip, IPv6Address)  # v6 forms judged by their v4


@pytest.mark.parametrize(
    ("network", "kind"),
    [
        ("127.0.0.0/8", "loopback"),
        ("10.0.0.0/8", "private"),
        ("172.16.0.0/12", "private"),
        ("192.168.0.0/16", "private"),
        ("169.254.0.0/16", "link-local"),
        ("100.64.0.0/10", "shared (CGNAT)"),
        ("224.0.0.0/4", "multicast"),
    ],
)
def test_every_address_of_the_inside_ranges_is_blocked(network: str, kind: str) -> None:
    net = IPv4Network(network)
    for ip in (net[0], net[1], net[net.num_addresses // 2], net[-1]):
        assert blocked_kind(ip) == kind, ip


@pytest.mark.parametrize(
    "public", ["8.8.8.8", "93.184.215.14", "2606:4700:4700::1111", "::ffff:1.1.1.1"]
)
def test_public_addresses_pass(public: str) -> None:
    assert blocked_kind(ip_address(public)) is None


class FakeDns:
    """Answers ``answers`` for every name, then ``later`` (a rebinding attacker's DNS)."""

    def __init__(self, answers: list[str], later: list[str] | None = None) -> None:
        self.answers = [ip_address(a) for a in answers]
        self.later = [ip_address(a) for a in (later or answers)]
        self.asked: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.asked.append((host, port))
        return self.answers if len(self.asked) == 1 else self.later


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = await Receiver().start()
    yield server
    await server.close()


async def _post(transport: PinnedTransport, url: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=transport, follow_redirects=False) as client:
        return await client.post(url, content=b"{}")


async def test_connects_to_the_address_it_checked_keeping_the_name(receiver: Receiver) -> None:
    dns = FakeDns(["127.0.0.1"], later=["10.9.9.9"])
    resp = await _post(
        PinnedTransport(allow_private=True, resolver=dns), f"http://hooks.test:{receiver.port}/x"
    )
    assert resp.status_code == 200
    assert dns.asked == [("hooks.test", receiver.port)]  # resolved once, by the transport
    [req] = receiver.requests
    assert (req.path, req.headers["host"], req.body) == ("/x", f"hooks.test:{receiver.port}", b"{}")


async def test_refused_when_any_address_is_blocked_before_connecting(receiver: Receiver) -> None:
    dns = FakeDns(["93.184.215.14", "127.0.0.1"])
    with pytest.raises(BlockedTarget) as err:
        await _post(
            PinnedTransport(allow_private=False, resolver=dns),
            f"http://hooks.test:{receiver.port}/x",
        )
    assert str(err.value) == "hooks.test resolves to 127.0.0.1, a loopback address"
    assert receiver.requests == []


async def test_the_next_address_when_one_refuses(receiver: Receiver) -> None:
    dns = FakeDns(["::1", "127.0.0.1"])  # the receiver listens on 127.0.0.1 only
    resp = await _post(
        PinnedTransport(allow_private=True, resolver=dns), f"http://hooks.test:{receiver.port}/"
    )
    assert resp.status_code == 200 and len(receiver.requests) == 1


async def test_an_unresolvable_name_is_a_connection_error() -> None:
    with pytest.raises(httpx.ConnectError, match="cannot resolve"):
        await _post(PinnedTransport(allow_private=False), "http://hooks.example.invalid/")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for ``hooks.test`` (cert, key)."""
    assert shutil.which("openssl"), "openssl (Debian's openssl package) makes the test certificate"
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    command = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2"
    command += " -subj /CN=hooks.test -addext subjectAltName=DNS:hooks.test"
    subprocess.run(
        [*command.split(), "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_tls_to_the_checked_address_verifies_the_name_with_sni(
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    sni: list[str | None] = []
    server_ctx.sni_callback = lambda _sock, name, _ctx: sni.append(name)  # type: ignore[assignment,misc,func-returns-value]
    hosts: list[str] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                fields = dict(
                    line.split(": ", 1) for line in head.decode().lower().split("\r\n")[1:-2]
                )
                await reader.readexactly(int(fields.get("content-length", "0")))
                hosts.append(fields["host"])
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    trust = ssl.create_default_context(cafile=str(cert))
    transport = PinnedTransport(allow_private=True, resolver=FakeDns(["127.0.0.1"]), verify=trust)
    try:
        async with httpx.AsyncClient(transport=transport) as client:
            resp = await client.post(f"https://hooks.test:{port}/x", content=b"{}")
            assert resp.status_code == 200
            assert (sni, hosts) == (["hooks.test"], [f"hooks.test:{port}"])
            # another name on the same address: its own connection, checked against its name
            # (the hooks.test connection, verified for hooks.test only, is not reused)
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.post(f"https://other.test:{port}/x", content=b"{}")
            assert sni[-1] == "other.test" and len(hosts) == 1
    finally:
        server.close()
        await server.wait_closed()
