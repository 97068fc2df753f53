"""Attacks on the running service, sent as an anonymous client would send them: bursts of writes,
slow bodies, and forty feed sources falling due at once. Throughout each, citizens' scans and
/readyz must go on answering, and no request may hang."""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator

import asyncpg
import httpx
import pytest

from merchant_code import profiles
from tests import factories
from tests.service import Watch, running, wait_until

pytestmark = pytest.mark.slow


async def _shop(conn: asyncpg.Connection) -> str:
    _, code = await factories.shop(conn)
    await profiles.drain(conn)
    return code


async def _complaints(base: str, code: str, n: int) -> list[httpx.Response]:
    """n complaints at once, each from its own address (through the trusted proxy header), so the
    per-address limit lets them all reach the database."""

    async def one(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.post(
            f"/api/v1/shops/{code}/complaints",
            json={"category": "hygiene", "text": f"地面很脏 {i}"},
            headers={"X-Forwarded-For": f"198.51.100.{i % 250 + 1}"},
        )

    limits = httpx.Limits(max_connections=n + 5)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        return await asyncio.gather(*(one(client, i) for i in range(n)))


async def _idle_in_transaction(conn: asyncpg.Connection) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND state = 'idle in transaction'"
    )
    return count


@pytest.mark.parametrize("burst", [12, 50])
async def test_a_burst_of_anonymous_writes_never_hangs_the_service(
    db_url: str, conn: asyncpg.Connection, burst: int
) -> None:
    code = await _shop(conn)
    async with running(db_url, trusted_proxies="127.0.0.1") as base, Watch(base, f"/s/{code}") as watch:
        answers = await _complaints(base, code, burst)
        statuses = [a.status_code for a in answers]
        # a second burst on the track pages' reopen, which throttles the same way
        number = next(a.json()["tracking_number"] for a in answers if a.status_code == 201)
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            reopens = await asyncio.gather(
                *(client.post(f"/track/{number}/reopen", json={"reason": "又脏了"}) for _ in range(burst))
            )
    # every write was answered (none timed out); refusals are 503 or 429 with Retry-After
    assert all(s in (201, 429, 503) for s in statuses), statuses
    assert statuses.count(201) >= min(burst, 10)
    assert all(r.status_code in (200, 409, 422, 429, 503) for r in reopens), [r.status_code for r in reopens]
    watch.assert_answered_throughout()
    assert await _idle_in_transaction(conn) == 0


async def test_slow_bodies_hold_nothing_and_are_cut_off(db_url: str, conn: asyncpg.Connection) -> None:
    code = await _shop(conn)
    async with (
        running(db_url, body_seconds="2", body_min_rate="1000") as base,
        Watch(base, f"/s/{code}") as watch,
    ):
        port = int(base.rsplit(":", 1)[1])
        answers = await asyncio.gather(*(_trickle(port, code) for _ in range(20)))
    assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers), answers[:3]
    watch.assert_answered_throughout()


async def _trickle(port: int, code: str) -> bytes:
    """A complaint whose body says 100,000 bytes and sends one byte every half second."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST /api/v1/shops/{code}/complaints HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{".encode()
    )
    try:
        for _ in range(120):  # a minute at most
            await writer.drain()
            try:
                return await asyncio.wait_for(reader.readline(), timeout=0.5)
            except TimeoutError:
                writer.write(b" ")
        return b"no answer within a minute"
    finally:
        writer.close()


@pytest.fixture
def stalled_feed() -> Iterator[tuple[str, list[str], threading.Event]]:
    """A feed server that holds every request until released: each pull waits on it."""
    release = threading.Event()
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            release.wait(60)
            body = b'{"items": [], "next": null}'
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen, release
    release.set()
    server.shutdown()
    server.server_close()


async def test_forty_sources_due_at_once_leave_the_web_its_connections(
    db_url: str, conn: asyncpg.Connection, stalled_feed: tuple[str, list[str], threading.Event]
) -> None:
    url, seen, release = stalled_feed
    code = await _shop(conn)
    for i in range(40):
        await conn.execute(
            "INSERT INTO feed_source (kind, name, url, config, interval_seconds)"
            " VALUES ('licence_registry', $1, $2, $3, 600)",
            f"registry-{i}",
            f"{url}/licences/{i}",
            {"allow_private": True},
        )
    async with running(db_url, scheduler="true", feed_concurrency="2", trusted_proxies="127.0.0.1") as base:

        async def pulling() -> bool:
            return len(seen) >= 2

        await wait_until(pulling, 60, "the scheduler to start pulling")
        async with Watch(base, f"/s/{code}") as watch:
            statuses = [a.status_code for a in await _complaints(base, code, 12)]
            await wait_until(lambda: _scanned(watch, 20), 30, "twenty scans while the pulls wait")
        assert len(set(seen)) == 2  # two at a time in the one worker; the other 38 wait their turn
        release.set()
    assert all(s == 201 for s in statuses), statuses
    watch.assert_answered_throughout()


async def _scanned(watch: Watch, n: int) -> bool:
    return len(watch.scans) >= n
