"""One kind of work filling its share leaves the others answering: searches held by a slow
statement fill the public API's share; scans and writes still answer, and the searches past the
share are refused at once with 503 and Retry-After instead of queueing."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import httpx
from litestar.testing import AsyncTestClient

from merchant_code import load, profiles
from merchant_code.app import create_app
from merchant_code.settings import Settings
from tests import factories
from tests.service import running, wait_until

SEARCH = "/api/v1/shops?q=shop"


async def _searches_held(conn: asyncpg.Connection, wanted: int) -> bool:
    """This many searches of this database wait on a lock (the test's lock on `trade`)."""
    count: int = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock' AND query NOT LIKE '%LOCK TABLE%'"
    )
    return count >= wanted


async def test_searches_filling_their_share_leave_scans_and_writes_answering(
    db_url: str, conn: asyncpg.Connection
) -> None:
    _, code = await factories.shop(conn)
    await profiles.drain(conn)  # its stored answer, which is all a scan reads
    blocker = await asyncpg.connect(db_url)
    settings = {"search_concurrency": "2", "search_wait_seconds": "0.2", "search_statement_seconds": "60"}
    try:
        async with (
            running(db_url, **settings) as base,
            httpx.AsyncClient(base_url=base, timeout=30) as client,
        ):
            # a search statement that cannot finish: every search reads the trades
            await blocker.execute("BEGIN; LOCK TABLE trade IN ACCESS EXCLUSIVE MODE")
            held = [asyncio.create_task(client.get(SEARCH)) for _ in range(2)]
            await wait_until(lambda: _searches_held(conn, 2), 30, "two searches held by the lock")

            started = time.monotonic()
            refused = await asyncio.gather(*(client.get(SEARCH) for _ in range(10)))
            assert {r.status_code for r in refused} == {503}, [r.text for r in refused]
            assert all(int(r.headers["retry-after"]) >= 1 for r in refused)
            assert refused[0].json()["status"] == 503
            assert time.monotonic() - started < 5  # refused, not queued behind the held ones

            # the other kinds answer as before
            for _ in range(5):
                started = time.monotonic()
                assert (await client.get(f"/s/{code}")).status_code == 200
                assert time.monotonic() - started < 3
            login = await client.post(
                "/api/v1/auth/login", json={"login": "nobody", "password": "wrong-password"}
            )
            assert login.status_code == 401, login.text
            assert (await client.get("/readyz")).status_code == 200

            # the lock gone, the held searches finish, and searching works again
            await blocker.execute("ROLLBACK")
            assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200]
            assert (await client.get(SEARCH)).status_code == 200
    finally:
        await blocker.close()


async def test_a_search_past_its_statement_timeout_is_told_to_come_back(
    db_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    settings = Settings(
        database_url=db_url, scheduler=False, data_dir=str(tmp_path), scan_rate=0, search_statement_seconds=1
    )
    async with AsyncTestClient(app=create_app(settings)) as client:
        await conn.execute("BEGIN; LOCK TABLE trade IN ACCESS EXCLUSIVE MODE")
        try:
            started = time.monotonic()
            answer = await client.get(SEARCH)
        finally:
            await conn.execute("ROLLBACK")
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] == "1"
        assert answer.json()["title"] == "Service unavailable"
        assert time.monotonic() - started < 10
        assert (await client.get(SEARCH)).status_code == 200


async def test_a_job_pauses_between_batches_while_requests_wait(db_url: str, tmp_path: Path) -> None:
    settings = Settings(database_url=db_url, scheduler=False, data_dir=str(tmp_path), scan_rate=0)
    app = create_app(settings)
    async with AsyncTestClient(app=app):
        assert not load.requests_waiting()
        assert not await load.pause_if_busy()
        slots = app.state.search_slots
        for _ in range(settings.search_concurrency):
            await slots.acquire()  # every search slot taken: searches wait
        try:
            assert load.requests_waiting()
            assert await load.pause_if_busy()
        finally:
            for _ in range(settings.search_concurrency):
                slots.release()
        assert not load.requests_waiting()
    assert not load.requests_waiting()  # the app gone, nothing is watched
