"""Sources that fail: 503s, timeouts, redirects into private networks. Runs end within their
deadline, retries back off, the SSRF rule refuses before any connection, and no test ever sends
a packet off the machine (every transport here fails the test on a non-loopback request)."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import stamina

from merchant_code import db
from merchant_code.feeds import http as feed_http
from merchant_code.feeds import runner
from tests import factories

PAGE = (Path(__file__).parent / "fixtures" / "feeds" / "licences" / "page1.json").read_bytes()
LAST = (Path(__file__).parent / "fixtures" / "feeds" / "licences" / "page2.json").read_bytes()


@pytest.fixture(autouse=True)
def no_backoff_waits() -> Iterator[None]:
    stamina.set_testing(True, attempts=4)  # retries still happen, without the waits
    yield
    stamina.set_testing(False)


def loopback_only(answer: Callable[[httpx.Request], httpx.Response]) -> httpx.MockTransport:
    """A transport that fails the test on any request not for loopback."""

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.host in ("127.0.0.1", "localhost", "::1"), f"tried to reach {request.url}"
        return answer(request)

    return httpx.MockTransport(handler)


async def registry(
    conn: asyncpg.Connection, url: str = "http://127.0.0.1:9/licences", allow: bool = True
) -> None:
    await conn.execute(
        "INSERT INTO feed_source (kind, name, url, config) VALUES ('licence_registry', 'registry', $1, $2)",
        url,
        {"allow_private": True} if allow else {},
    )


async def pull(db_url: str, transport: httpx.AsyncBaseTransport, deadline: float = 10) -> runner.RunResult:
    pool = await db.create_pool(db_url, max_size=4)
    try:
        return await runner.run_source(pool, "registry", transport=transport, deadline=deadline)
    finally:
        await pool.close()


async def test_503_then_a_timeout_then_200_is_retried_and_delivered(
    db_url: str, conn: asyncpg.Connection
) -> None:
    shop_id, _ = await factories.shop(conn)
    await conn.execute("UPDATE shop SET uscc = '91310106MA1FL0XX2B' WHERE id = $1", shop_id)
    await registry(conn)
    answers: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        answers.append("x")
        if len(answers) == 1:
            return httpx.Response(503, headers={"retry-after": "1"})
        if len(answers) == 2:
            raise httpx.ReadTimeout("the registry is slow", request=request)
        body = PAGE if len(answers) == 3 else LAST
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})

    result = await pull(db_url, loopback_only(answer))
    assert result.status == "ok", result.error
    assert len(answers) >= 3
    assert await conn.fetchval("SELECT count(*) FROM licence WHERE shop_id = $1", shop_id) >= 1


async def test_a_source_that_keeps_failing_ends_its_run_and_the_next_one_can_start(
    db_url: str, conn: asyncpg.Connection
) -> None:
    await registry(conn)
    result = await pull(db_url, loopback_only(lambda r: httpx.Response(503)))
    assert result.status == "failed" and "503" in (result.error or "")
    assert await conn.fetchval("SELECT status FROM feed_run WHERE id = $1", result.run_id) == "failed"
    assert await conn.fetchval("SELECT failures FROM feed_source WHERE name = 'registry'") == 1


async def test_a_hanging_source_is_cut_at_the_run_deadline(db_url: str, conn: asyncpg.Connection) -> None:
    await registry(conn)

    class Hanging(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            assert request.url.host == "127.0.0.1"
            await asyncio.sleep(3600)
            raise AssertionError("unreachable")

    started = time.monotonic()
    result = await pull(db_url, Hanging(), deadline=1.5)
    assert time.monotonic() - started < 5
    assert result.status == "failed" and "Timeout" in (result.error or "")


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/",  # the cloud metadata address (link-local)
        "http://10.0.0.5/licences",  # private
        "http://[fe80::1]/licences",  # IPv6 link-local
        "http://localhost:9/licences",  # loopback, by name
        "file:///etc/passwd",  # not http at all
    ],
)
async def test_the_ssrf_rule_refuses_before_any_connection(
    db_url: str, conn: asyncpg.Connection, target: str
) -> None:
    connected: list[str] = []

    def never(request: httpx.Request) -> httpx.Response:
        connected.append(str(request.url))
        return httpx.Response(200, content=PAGE)

    await registry(conn, url=target, allow=False)
    result = await pull(db_url, httpx.MockTransport(never))
    assert result.status == "failed" and "Refused" in (result.error or "")
    assert connected == []


async def test_a_redirect_into_a_private_range_is_refused_at_the_hop(
    db_url: str, conn: asyncpg.Connection
) -> None:
    """A public-looking source (no allow_private) that redirects to the metadata address: the
    redirect's target is checked like the first URL, and nothing is sent there."""
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(302, headers={"location": "http://169.254.169.254/latest/"})

    transport = feed_http.GuardedTransport(httpx.MockTransport(answer), allow_private=False)
    async with httpx.AsyncClient(transport=transport, follow_redirects=True) as client:
        with pytest.raises(feed_http.Refused):
            await client.get("http://8.8.8.8/licences")  # a public address: allowed through the check
    assert seen == ["http://8.8.8.8/licences"]  # the mock answered; the hop to 169.254 never left


def test_retry_after_is_read_as_seconds_or_as_an_http_date() -> None:
    now = datetime.datetime(2026, 11, 27, 12, 0, tzinfo=datetime.UTC)
    assert feed_http.retry_after_seconds("30", 60.0, now) == 30.0
    assert feed_http.retry_after_seconds("3600", 60.0, now) == 60.0  # capped
    assert feed_http.retry_after_seconds("Fri, 27 Nov 2026 12:00:45 GMT", 60.0, now) == 45.0
    assert feed_http.retry_after_seconds("Fri, 27 Nov 2026 11:00:00 GMT", 60.0, now) == 0.0  # already past
    assert feed_http.retry_after_seconds("Sat, 28 Nov 2026 12:00:00 GMT", 60.0, now) == 60.0
    overflowing = "Wed, 99999999999999999999 Oct 2020 07:28:00 GMT"
    for unreadable in (None, "", "soon", "-5", "1.5e3", "²", overflowing):
        assert feed_http.retry_after_seconds(unreadable, 60.0, now) is None
