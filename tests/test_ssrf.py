"""SSRF by connection, not by name: a feed, a channel or a webhook whose name answers a public
address to the check and 127.0.0.1 to the connection (DNS rebinding) never reaches loopback;
IPv6 addresses that wrap a private IPv4 one are refused; a bad URL is refused when it is stored,
not found out when it is used. https still verifies the certificate against the name.

No test here sends a packet off the machine: the "public" address is answered by a stub DNS and
every attempt to reach it is recorded and refused by a stub network (or a stub backend)."""

from __future__ import annotations

import asyncio
import datetime
import errno
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import httpcore
import httpx
import pytest
import stamina
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from litestar.testing import AsyncTestClient

from merchant_code import db, policies
from merchant_code.feeds import http as feed_http
from merchant_code.feeds import runner, ssrf
from tests import cli, factories
from tests import world as w
from tests.test_policies_delivery import BASE_URL, TZ, district, policy_in
from tests.webhook_receiver import Receiver

PUBLIC = "93.184.215.14"  # a public address: answered by the stub DNS, never reached
NAME = "feed.rebind.test"
PAGE = (Path(__file__).parent / "fixtures" / "feeds" / "licences" / "page1.json").read_bytes()


@pytest.fixture(autouse=True)
def no_backoff_waits() -> Iterator[None]:
    stamina.set_testing(True, attempts=4)  # retries still happen, without the waits
    yield
    stamina.set_testing(False)


class Loopback:
    """An HTTP server on 127.0.0.1 that records every request it gets and answers a feed page."""

    def __init__(self) -> None:
        hits = self.hits = []  # type: list[str]

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(PAGE)))
                self.end_headers()
                self.wfile.write(PAGE)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def loopback() -> Iterator[Loopback]:
    server = Loopback()
    yield server
    server.close()


class RebindingNetwork:
    """The event loop's DNS and network, as seen by everything in the test process: NAME answers
    PUBLIC the first time and 127.0.0.1 every time after (a rebinding attacker's DNS), and PUBLIC
    cannot be reached (each attempt is recorded). Every other name and address is the real one,
    so the database and the loopback server work as usual."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        loop = asyncio.get_running_loop()
        self.real_getaddrinfo = loop.getaddrinfo
        self.real_connect = loop.create_connection
        self.answers = 0
        self.tried: list[str] = []
        monkeypatch.setattr(loop, "getaddrinfo", self.getaddrinfo)
        monkeypatch.setattr(loop, "create_connection", self.create_connection)

    async def getaddrinfo(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if (host.decode() if isinstance(host, bytes) else host) != NAME:
            return await self.real_getaddrinfo(host, port, *args, **kwargs)
        self.answers += 1
        address = PUBLIC if self.answers == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, int(port or 80)))]

    async def create_connection(self, factory: Any, host: Any = None, *args: Any, **kwargs: Any) -> Any:
        if host == PUBLIC:
            self.tried.append(host)
            raise OSError(errno.ENETUNREACH, "the test's network reaches loopback only")
        return await self.real_connect(factory, host, *args, **kwargs)


# ------------------------------------------------------------------------- rebinding, end to end


async def test_a_feed_whose_name_rebinds_to_loopback_after_the_check_never_reaches_loopback(
    db_url: str, conn: asyncpg.Connection, loopback: Loopback, monkeypatch: pytest.MonkeyPatch
) -> None:
    await conn.execute(
        "INSERT INTO feed_source (kind, name, url, config) VALUES ('licence_registry', 'registry', $1, '{}')",
        f"http://{NAME}:{loopback.port}/licences",
    )
    network = RebindingNetwork(monkeypatch)
    pool = await db.create_pool(db_url, max_size=4)
    try:
        result = await runner.run_source(pool, "registry", deadline=30)
    finally:
        await pool.close()
    assert loopback.hits == []
    assert network.tried == [PUBLIC]  # the connection went to the address that was checked
    assert result.status == "failed"
    assert "Refused" in (result.error or "") and "127.0.0.1" in (result.error or "")  # the retry's answer


async def test_a_gateway_whose_name_rebinds_to_loopback_after_the_check_is_never_posted_to(
    conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Receiver() as receiver:
        me, _ = await district(conn, 1, receiver.url.replace("127.0.0.1", NAME), allow_private=False)
        await policies.create(conn, me, policy_in("消防检查"), tz=TZ)
        assert await policies.send_due(conn, TZ) == 2  # the inbox and the gateway
        network = RebindingNetwork(monkeypatch)
        assert await policies.deliver_channels(conn, BASE_URL) == 1
        assert receiver.wait_idle()
        assert receiver.requests() == []
    assert network.tried == [PUBLIC]
    error = await conn.fetchval("SELECT last_error FROM delivery WHERE channel = 'gateway'")
    assert error.startswith("Refused: ") and "127.0.0.1" in error  # the retry's answer, refused


# ------------------------------------------------------------- the checked transport, stubbed


class StubResolver:
    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        return self.answers[min(len(self.asked), len(self.answers)) - 1]


class RecordingBackend(httpcore.AsyncNetworkBackend):
    """Connects to loopback for real; records and refuses every other address (no packet leaves)."""

    def __init__(self) -> None:
        self.real = httpcore.AnyIOBackend()
        self.targets: list[tuple[str, int]] = []

    async def connect_tcp(self, host: str, port: int, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        self.targets.append((host, port))
        if host != "127.0.0.1":
            raise httpcore.ConnectError(f"{host} is not reachable from a test")
        return await self.real.connect_tcp(host, port, **kwargs)

    async def sleep(self, seconds: float) -> None:
        await self.real.sleep(seconds)


def checked_client(resolver: StubResolver, backend: RecordingBackend, **kwargs: Any) -> httpx.AsyncClient:
    inner = ssrf.CheckedTransport(allow_private=False, resolver=resolver, backend=backend, **kwargs)
    return feed_http.client(False, inner=inner)


async def test_a_name_is_resolved_once_and_the_connection_goes_to_the_checked_address(
    loopback: Loopback,
) -> None:
    resolver = StubResolver([PUBLIC], ["127.0.0.1"])
    backend = RecordingBackend()
    async with checked_client(resolver, backend) as client:
        with pytest.raises(feed_http.Refused, match=r"127\.0\.0\.1"):
            await client.get(f"http://{NAME}:{loopback.port}/licences")
    assert backend.targets == [(PUBLIC, loopback.port)]  # the first connection, to what was checked
    assert resolver.asked == [NAME, NAME]  # once per connection: the retry's answer was refused
    assert loopback.hits == []


async def test_one_private_address_among_the_answers_refuses_the_name(loopback: Loopback) -> None:
    resolver = StubResolver([PUBLIC, "2002:7f00:1::"])
    backend = RecordingBackend()
    async with checked_client(resolver, backend) as client:
        with pytest.raises(feed_http.Refused, match=r"wrapping 127\.0\.0\.1"):
            await client.get(f"http://{NAME}:{loopback.port}/")
    assert backend.targets == []


async def test_allow_private_reaches_loopback_through_the_same_transport(loopback: Loopback) -> None:
    resolver = StubResolver(["127.0.0.1"])
    backend = RecordingBackend()
    inner = ssrf.CheckedTransport(allow_private=True, resolver=resolver, backend=backend)
    async with feed_http.client(True, inner=inner) as client:
        response = await client.get(f"http://{NAME}:{loopback.port}/licences")
    assert response.status_code == 200 and response.content == PAGE
    assert backend.targets == [("127.0.0.1", loopback.port)] and loopback.hits == ["/licences"]


def _tls_pair(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for NAME only, and a client context that trusts it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(NAME)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    client = ssl.create_default_context(cadata=cert_pem.decode())
    return server, client


async def test_https_verifies_the_certificate_against_the_name_while_connecting_to_the_address(
    tmp_path: Path,
) -> None:
    server_context, client_context = _tls_pair(tmp_path)
    sni: list[str | None] = []
    server_context.sni_callback = lambda sock, server_name, context: sni.append(server_name)
    plain = Loopback()
    plain.server.socket = server_context.wrap_socket(plain.server.socket, server_side=True)
    try:
        resolver = StubResolver(["127.0.0.1"])
        backend = RecordingBackend()
        inner = ssrf.CheckedTransport(
            allow_private=True, resolver=resolver, backend=backend, verify=client_context
        )
        async with feed_http.client(True, inner=inner) as client:
            response = await client.get(f"https://{NAME}:{plain.port}/licences")
    finally:
        plain.close()
    assert response.status_code == 200 and response.content == PAGE
    assert backend.targets == [("127.0.0.1", plain.port)]
    assert sni == [NAME]


# ---------------------------------------------------------------------------- the address rule


def test_public_and_private_addresses() -> None:
    for address in ("8.8.8.8", "2001:4860:4860::8888", "2002:808:808::1", "64:ff9b::808:808",
                    "::ffff:8.8.8.8"):  # fmt: skip
        assert ssrf.is_public(address), address
    for address in (
        "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
        "0.0.0.0", "224.0.0.1", "240.0.0.1", "255.255.255.255",  # noqa: S104
        "::1", "::", "fe80::1", "fc00::1", "ff02::1",
        "::ffff:127.0.0.1", "::ffff:10.0.0.1",  # IPv4-mapped
        "2002:7f00:1::", "2002:a9fe:a9fe::1", "2002:c0a8:101::",  # 6to4 wrapping 127.0.0.1, 169.254.169.254
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo (server 65.54.227.120, client 192.0.2.45)
        "2001:0:5ef5:79fd:0:0:80ff:fffe",  # Teredo whose client is 127.0.0.1
        "64:ff9b::7f00:1", "64:ff9b::a00:5", "64:ff9b::a9fe:a9fe",  # NAT64 wrapping private IPv4
        "64:ff9b:1::a00:1",  # local-use NAT64
    ):  # fmt: skip
        assert not ssrf.is_public(address), address
    assert ssrf.refusal("2002:7f00:1::") == "an address wrapping 127.0.0.1, a loopback address"
    assert ssrf.refusal("64:ff9b::a00:5") == "a private address"


@pytest.mark.parametrize(
    "url",
    [
        "http://[2002:7f00:1::]/licences",
        "http://[::ffff:127.0.0.1]/licences",
        "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",
        "http://[2001:0:5ef5:79fd::80ff:fffe]/",
    ],
)
async def test_ipv6_literals_wrapping_private_ipv4_are_refused_before_any_connection(url: str) -> None:
    connected: list[str] = []

    def never(request: httpx.Request) -> httpx.Response:
        connected.append(str(request.url))
        return httpx.Response(200)

    async with feed_http.client(False, inner=httpx.MockTransport(never)) as client:
        with pytest.raises(feed_http.Refused):
            await client.get(url)
    assert connected == []


# ------------------------------------------------------------------ refused when stored


def _one_line(done: Any) -> str:
    assert "Traceback" not in done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, done.stderr
    return str(lines[0])


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("file:///etc/passwd", "http or https"),
        ("gopher://127.0.0.1:70/_x", "http or https"),
        ("http://127.0.0.1:9/licences", "loopback"),
        ("http://localhost:9/licences", "localhost resolves to"),
        ("http://[2002:7f00:1::]/licences", "wrapping 127.0.0.1"),
        ("http://169.254.169.254/latest/", "link-local"),
    ],
)
async def test_feeds_add_and_channels_add_refuse_a_bad_url_at_once(
    db_url: str, conn: asyncpg.Connection, url: str, says: str
) -> None:
    feed = await asyncio.to_thread(
        cli.run, db_url, "feeds", "add", "registry", "--kind", "licence_registry", "--url", url
    )
    channel = await asyncio.to_thread(cli.run, db_url, "channels", "add", "sms", "--url", url)
    for done in (feed, channel):
        assert done.returncode == 2, done.stderr
        line = _one_line(done)
        assert line.startswith("merchant-code: error: --url ") and says in line, line
    assert await conn.fetchval("SELECT count(*) FROM feed_source") == 0
    assert await conn.fetchval("SELECT count(*) FROM delivery_channel") == 0


async def test_allow_private_still_stores_a_loopback_url_but_never_another_scheme(
    db_url: str, conn: asyncpg.Connection
) -> None:
    feed = await asyncio.to_thread(
        cli.run, db_url, "feeds", "add", "inside", "--kind", "licence_registry",
        "--url", "http://127.0.0.1:9/licences", "--config", '{"allow_private": true}',
    )  # fmt: skip
    assert feed.returncode == 0, feed.stderr
    gopher = await asyncio.to_thread(
        cli.run, db_url, "channels", "add", "sms", "--url", "gopher://127.0.0.1:70/", "--allow-private"
    )
    assert gopher.returncode == 2 and "http or https" in _one_line(gopher)
    assert await conn.fetchval("SELECT count(*) FROM feed_source WHERE name = 'inside'") == 1
    assert await conn.fetchval("SELECT count(*) FROM delivery_channel") == 0


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "https://10.0.0.7/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[2002:7f00:1::]/hook",
        "https://" + "0" * 1000 + "/hook",  # no DNS name is that long (schemathesis found a 500)
        "https://a." + "b" * 64 + ".cn/hook",
    ],
)
async def test_a_webhook_to_a_private_address_is_refused_naming_the_url(
    client: AsyncTestClient[Any], conn: asyncpg.Connection, url: str
) -> None:
    await factories.area(conn, "310199002", "二街道")
    await factories.account(conn, "manager2", "manager", area_code="310199002")
    token = await w.log_in(client, "manager2")
    made = await client.post(
        "/api/v1/manage/webhooks",
        json={"name": "x-app", "url": url, "area_code": "310199002", "events": ["case_opened"]},
        headers={"authorization": f"Bearer {token}"},
    )
    assert made.status_code == 422, made.text
    assert made.headers["content-type"].startswith("application/problem+json")
    assert [e["field"] for e in made.json()["errors"]] == ["url"]
    assert await conn.fetchval("SELECT count(*) FROM delivery_channel") == 0
