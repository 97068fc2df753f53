"""The feed runner, through a fake source: matching, idempotent upserts, never backwards,
quarantine, cursor and counts, failures and the breaker, one instance per source."""

from __future__ import annotations

import asyncio
import datetime
import types
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest

from merchant_code import db
from merchant_code.feeds import runner
from merchant_code.feeds.base import InspectionRecord, Match, Page, Parsed, Reject, ShopRecord, Violation
from tests import factories
from tests.heartbeat import busy, heartbeat
from tests.waiting import scaled

DAY = datetime.date(2026, 5, 1)
T1 = datetime.datetime(2026, 5, 2, tzinfo=datetime.UTC)
T0 = datetime.datetime(2026, 4, 2, tzinfo=datetime.UTC)


class Config(msgspec.Struct):
    url: str


def fake(pages: list[Parsed], fail: bool = False) -> types.ModuleType:
    """A source module serving `pages` in order (the cursor is the next page's index)."""
    mod = types.ModuleType("fake_feed")

    async def fetch(client: httpx.AsyncClient, config: Config, cursor: str | None) -> Page:
        if fail:
            raise httpx.ConnectError("connection refused")
        n = int(cursor or 0)
        return Page(body=str(n).encode(), next_cursor=str(n + 1), last=n + 1 >= len(pages))

    def parse(page: Page, config: Config) -> Parsed:
        return pages[int(page.body)]

    mod.Config = Config  # type: ignore[attr-defined]
    mod.fetch = fetch  # type: ignore[attr-defined]
    mod.parse = parse  # type: ignore[attr-defined]
    return mod


async def source(conn: asyncpg.Connection, name: str = "fake") -> None:
    await conn.execute(
        "INSERT INTO feed_source (kind, name, url) VALUES ('lives', $1, 'http://127.0.0.1:9/')", name
    )


def inspection(
    n: int, business: str = "B1", score: float = 90.0, updated: datetime.datetime = T1
) -> InspectionRecord:
    return InspectionRecord(
        external_id=f"I{n}",
        match=Match(business_id=business),
        inspected_on=DAY,
        result="pass",
        score=score,
        violations=(Violation("V08", "加工场所环境卫生不整洁", False),),
        updated_at=updated,
    )


async def run(db_url: str, mod: types.ModuleType, name: str = "fake") -> runner.RunResult:
    pool = await db.create_pool(db_url, max_size=4)
    try:
        async with httpx.AsyncClient() as client:
            return await runner.run_source(pool, name, client=client, module=mod, deadline=10)
    finally:
        await pool.close()


async def fingerprint(conn: asyncpg.Connection) -> list[Any]:
    return [
        tuple(r)
        for r in await conn.fetch(
            "SELECT i.external_id, i.shop_id, i.score, i.result, array_agg(v.code ORDER BY v.id)"
            " FROM inspection i LEFT JOIN violation v ON v.inspection_id = i.id"
            " WHERE i.source = 'fake' GROUP BY i.id ORDER BY i.external_id"
        )
    ]


async def test_a_page_is_matched_stored_quarantined_and_counted(
    db_url: str, conn: asyncpg.Connection
) -> None:
    shop_id, _ = await factories.shop(conn)
    uscc = await conn.fetchval("SELECT uscc FROM shop WHERE id = $1", shop_id)
    await source(conn)
    await conn.execute("DELETE FROM profile_dirty")
    page = Parsed(
        records=[
            ShopRecord(external_id="B1", match=Match(business_id="B1", uscc=uscc)),
            inspection(1),
            inspection(2, business="NOBODY"),
        ],
        rejects=[Reject(b"B1,19000101,,", "placeholder date 1900-01-01", None)],
    )
    result = await run(db_url, fake([page]))
    assert result.status == "ok", result.error
    c = result.counts
    assert (c.fetched, c.inserted, c.updated, c.unchanged, c.quarantined) == (4, 2, 0, 0, 2)
    assert c.fetched == c.inserted + c.updated + c.unchanged + c.quarantined
    row = await conn.fetchrow("SELECT * FROM feed_run WHERE id = $1", result.run_id)
    assert row is not None and (row["status"], row["fetched"], row["quarantined"]) == ("ok", 4, 2)
    assert await conn.fetchval("SELECT shop_id FROM inspection WHERE external_id = 'I1'") == shop_id
    reasons = {r["reason"] for r in await conn.fetch("SELECT reason FROM feed_reject")}
    assert reasons == {"placeholder date 1900-01-01", "no shop in the register matches this record"}
    raw = await conn.fetchval("SELECT raw_bytes FROM feed_reject WHERE reason LIKE 'placeholder%'")
    assert raw == b"B1,19000101,,"
    assert await conn.fetchval("SELECT cursor FROM feed_source WHERE name = 'fake'") == "1"
    assert await conn.fetchval("SELECT count(*) FROM profile_dirty WHERE shop_id = $1", shop_id) == 1


async def test_the_same_page_three_times_and_pages_out_of_order_change_nothing(
    db_url: str, conn: asyncpg.Connection
) -> None:
    shop_id, _ = await factories.shop(conn)
    uscc = await conn.fetchval("SELECT uscc FROM shop WHERE id = $1", shop_id)
    await source(conn)
    first = Parsed(
        records=[ShopRecord(external_id="B1", match=Match(uscc=uscc, business_id="B1")), inspection(1)],
        rejects=[],
    )
    # page 2 carries a later version of I1 (the source changed it since page 1 was made)
    later = T1 + datetime.timedelta(days=1)
    second = Parsed(records=[inspection(2), inspection(1, score=95.0, updated=later)], rejects=[])
    results = []
    for _ in range(3):
        await conn.execute("UPDATE feed_source SET cursor = NULL")
        results.append(await run(db_url, fake([first, second])))
    after_three = await fingerprint(conn)
    assert [r.counts.inserted for r in results] == [3, 0, 0]  # the mapping, I1 and I2
    assert results[2].counts.unchanged == results[2].counts.fetched - results[2].counts.quarantined
    # the same two pages the other way round give the same data
    await conn.execute("UPDATE feed_source SET cursor = NULL")
    await run(db_url, fake([second, first]))
    await conn.execute("UPDATE feed_source SET cursor = NULL")
    await run(db_url, fake([first, second]))
    assert await fingerprint(conn) == after_three
    assert after_three[0][2] == 95  # the later version of I1 won


async def test_an_older_version_never_overwrites_a_newer_one(db_url: str, conn: asyncpg.Connection) -> None:
    shop_id, _ = await factories.shop(conn)
    uscc = await conn.fetchval("SELECT uscc FROM shop WHERE id = $1", shop_id)
    await source(conn)
    mapping = ShopRecord(external_id="B1", match=Match(uscc=uscc, business_id="B1"))
    await run(db_url, fake([Parsed(records=[mapping, inspection(1, score=80.0, updated=T1)], rejects=[])]))
    await conn.execute("UPDATE feed_source SET cursor = NULL")
    stale = await run(db_url, fake([Parsed(records=[inspection(1, score=60.0, updated=T0)], rejects=[])]))
    assert stale.counts.unchanged == 1 and stale.counts.updated == 0
    assert await conn.fetchval("SELECT score FROM inspection WHERE external_id = 'I1'") == 80


async def test_a_failing_source_is_recorded_and_paused_after_five_failures(
    db_url: str, conn: asyncpg.Connection
) -> None:
    await source(conn)
    for _ in range(runner.PAUSE_AFTER):
        result = await run(db_url, fake([], fail=True))
        assert result.status == "failed" and "ConnectError" in (result.error or "")
    row = await conn.fetchrow("SELECT failures, paused_until FROM feed_source WHERE name = 'fake'")
    assert row is not None and row["failures"] == runner.PAUSE_AFTER and row["paused_until"] is not None
    assert await conn.fetchval("SELECT count(*) FROM feed_run WHERE status = 'failed'") == runner.PAUSE_AFTER


async def test_two_instances_never_run_one_source_at_once(db_url: str, conn: asyncpg.Connection) -> None:
    await source(conn)
    gate = asyncio.Event()
    mod = fake([Parsed(records=[], rejects=[])])
    original = mod.fetch

    fetching = asyncio.Event()

    async def slow_fetch(client: httpx.AsyncClient, config: Config, cursor: str | None) -> Page:
        fetching.set()  # the first run holds the source from here on
        await gate.wait()
        page: Page = await original(client, config, cursor)
        return page

    mod.fetch = slow_fetch  # type: ignore[attr-defined]
    first = asyncio.create_task(run(db_url, mod))
    await fetching.wait()
    second = await run(db_url, mod)
    gate.set()
    assert second.status == "skipped"
    assert (await first).status == "ok"


async def test_an_unknown_source_is_a_clear_error(db_url: str) -> None:
    from merchant_code.errors import NotFound

    with pytest.raises(NotFound, match="nothing-here"):
        await run(db_url, fake([]), name="nothing-here")


async def test_a_licence_registry_is_pulled_over_http_page_by_page(
    db_url: str, conn: asyncpg.Connection
) -> None:
    """The real licence module through the runner, over HTTP (a mock transport: no packet leaves
    the process): licences land on the shop with the holder's USCC, the cursor moves, and a second
    pull of the same pages changes nothing."""
    from pathlib import Path

    fixtures = Path(__file__).parent / "fixtures" / "feeds" / "licences"
    pages = [(fixtures / "page1.json").read_bytes(), (fixtures / "page2.json").read_bytes()]
    shop_id, _ = await factories.shop(conn)
    await conn.execute("UPDATE shop SET uscc = '91310106MA1FL0XX2B' WHERE id = $1", shop_id)
    await conn.execute(
        "INSERT INTO feed_source (kind, name, url) VALUES ('licence_registry', 'registry', 'http://127.0.0.1:9/licences')"
    )
    seen: list[str] = []

    def serve(request: httpx.Request) -> httpx.Response:
        assert request.url.host == "127.0.0.1"
        seen.append(str(request.url.params.get("updated_since")))
        return httpx.Response(
            200, content=pages[0 if len(seen) % 2 == 1 else 1], headers={"content-type": "application/json"}
        )

    pool = await db.create_pool(db_url, max_size=4)
    try:
        async with httpx.AsyncClient(transport=httpx.MockTransport(serve)) as client:
            first = await runner.run_source(pool, "registry", client=client, deadline=10)
            await conn.execute("UPDATE feed_source SET cursor = NULL WHERE name = 'registry'")
            again = await runner.run_source(pool, "registry", client=client, deadline=10)
    finally:
        await pool.close()
    assert first.status == "ok", first.error
    c = first.counts
    assert c.fetched == c.inserted + c.updated + c.unchanged + c.quarantined and c.inserted >= 2
    numbers = {
        r["number"] for r in await conn.fetch("SELECT number FROM licence WHERE shop_id = $1", shop_id)
    }
    assert "JY13101060012345" in numbers
    assert await conn.fetchval("SELECT cursor FROM feed_source WHERE name = 'registry'") is not None
    assert again.counts.inserted == 0 and again.counts.updated == 0


async def test_a_review_deleted_by_a_bare_tombstone_disappears_from_the_shop(
    db_url: str, conn: asyncpg.Connection
) -> None:
    from merchant_code.feeds.base import ReviewRecord

    shop_id, _ = await factories.shop(conn)
    uscc = await conn.fetchval("SELECT uscc FROM shop WHERE id = $1", shop_id)
    await source(conn)
    posted = datetime.datetime(2026, 5, 1, tzinfo=datetime.UTC)
    review = ReviewRecord(
        external_id="R1", match=Match(uscc=uscc), rating=2, body="不好吃", posted_at=posted, updated_at=T0
    )
    tombstone = ReviewRecord(
        external_id="R1", match=Match(uscc=uscc), rating=None, posted_at=posted, deleted=True, updated_at=T1
    )
    never_seen = ReviewRecord(
        external_id="R9", match=Match(uscc=uscc), rating=None, posted_at=posted, deleted=True, updated_at=T1
    )
    first = await run(db_url, fake([Parsed(records=[review], rejects=[])]))
    assert first.counts.inserted == 1
    await conn.execute("UPDATE feed_source SET cursor = NULL")
    gone = await run(db_url, fake([Parsed(records=[tombstone, never_seen], rejects=[])]))
    c = gone.counts
    assert (c.updated, c.unchanged, c.quarantined) == (1, 1, 0)
    assert await conn.fetchval("SELECT deleted_at IS NOT NULL FROM review WHERE external_id = 'R1'")
    assert await conn.fetchval("SELECT count(*) FROM review WHERE external_id = 'R9'") == 0


async def test_the_scheduled_pull_runs_a_source_once_per_interval_whatever_the_workers(
    db_url: str, conn: asyncpg.Connection
) -> None:
    """Every worker of every instance has the job; the first run within the interval takes it."""
    from merchant_code.feeds import schedule
    from merchant_code.scheduler import jobs_state
    from merchant_code.settings import Settings

    await conn.execute(
        "INSERT INTO feed_source (kind, name, url, config, interval_seconds)"
        " VALUES ('licence_registry', 'registry', 'http://127.0.0.1:9/', $1, 600)",
        {"allow_private": True},
    )
    calls: list[str] = []
    original = runner.run_source

    async def counting(pool: Any, name: str, **kwargs: Any) -> runner.RunResult:
        calls.append(name)
        await conn.execute(
            "INSERT INTO feed_run (source_id) SELECT id FROM feed_source WHERE name = $1", name
        )
        return runner.RunResult(name, "ok")

    runner.run_source = counting  # type: ignore[assignment]
    pool = await db.create_pool(db_url, max_size=4)
    try:
        state = jobs_state(pool, Settings(database_url=db_url))
        for _ in range(3):  # three workers' jobs firing at the same tick
            await schedule.pull(state, "registry")
    finally:
        runner.run_source = original  # type: ignore[assignment]
        await pool.close()
    assert calls == ["registry"]


async def test_a_slow_parse_does_not_stop_the_workers_other_work(
    db_url: str, conn: asyncpg.Connection
) -> None:
    """A large feed takes seconds to parse; the worker that pulls it keeps serving meanwhile."""
    await source(conn)
    mod = fake([Parsed(records=[inspection(1)], rejects=[])])
    pure_parse = mod.parse

    def slow_parse(page: Page, config: Config) -> Parsed:
        busy(1.5)  # stands for half a minute of CSV on a million-row zip
        return pure_parse(page, config)

    mod.parse = slow_parse  # type: ignore[attr-defined]
    async with heartbeat() as gaps:
        result = await run(db_url, mod)
    assert result.status == "ok", result.error
    # never held up for the parse's second and a half (a busy machine may stretch a gap, not that far)
    assert len(gaps) >= 5 and max(gaps) < min(scaled(0.5), 1.0), max(gaps)


async def test_a_page_undone_by_a_deadlock_is_stored_again_once(
    db_url: str, conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two sources' pages that mark the same shops dirty in another order can deadlock; PostgreSQL
    undoes one transaction, and the runner stores that page again instead of failing the run."""
    import stamina

    await source(conn)
    original = runner.store
    calls = 0

    async def deadlocking(*args: Any, **kwargs: Any) -> runner.Counts:
        nonlocal calls
        calls += 1
        counts = await original(*args, **kwargs)  # written, then undone with the transaction
        if calls == 1:
            raise asyncpg.DeadlockDetectedError("deadlock detected")
        return counts

    monkeypatch.setattr(runner, "store", deadlocking)
    stamina.set_testing(True, attempts=3)  # the retry without its wait
    try:
        result = await run(db_url, fake([Parsed(records=[inspection(1)], rejects=[])]))
    finally:
        stamina.set_testing(False)
    assert result.status == "ok", result.error
    assert calls == 2
    assert result.counts.fetched == 1
    assert await conn.fetchval("SELECT fetched FROM feed_run") == 1  # counted once, not twice
