"""The demo's local provider, pulled by the real runner over HTTP on loopback: every format
ingests, a second pull changes nothing, and one bucket later new records arrive and the touched
shops' profiles are marked for rebuild."""

from __future__ import annotations

import datetime

import asyncpg
import httpx
import pytest

from merchant_code import db
from merchant_code.district import seed_district
from merchant_code.feeds import provider as demo
from merchant_code.feeds import runner

SEED = 7
BUCKET = 120
START = datetime.datetime(2026, 5, 1, 9, 0, tzinfo=datetime.UTC)
TABLES = ("inspection", "licence", "review", "sentiment_item")
LIVES_SOURCES = ("demo-lives", "demo-lives-flat", "demo-lives-flat-zip", "demo-lives-min")


class Clock:
    def __init__(self, at: datetime.datetime) -> None:
        self.at = at

    def __call__(self) -> datetime.datetime:
        return self.at


class LoopbackOnly(httpx.AsyncHTTPTransport):
    """The real transport, failing the test on any request that is not for loopback."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert request.url.host == "127.0.0.1", f"a request off the machine: {request.url}"
        return await super().handle_async_request(request)


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


async def pull_all(pool: asyncpg.Pool, sources: list[demo.SourceSpec]) -> dict[str, runner.RunResult]:
    results = {}
    for s in sources:
        async with LoopbackOnly() as transport:
            results[s.name] = await runner.run_source(pool, s.name, transport=transport, deadline=60)
    return results


def table(results: dict[str, runner.RunResult]) -> str:
    return "\n" + "\n".join(
        f"{name}: {r.status} pages={r.pages} fetched={r.counts.fetched} inserted={r.counts.inserted}"
        f" updated={r.counts.updated} unchanged={r.counts.unchanged} quarantined={r.counts.quarantined}"
        f" {r.error or ''}"
        for name, r in results.items()
    )


async def test_the_demo_district_is_pulled_from_the_provider_over_http(
    db_url: str, conn: asyncpg.Connection, clock: Clock
) -> None:
    await seed_district(conn, shops=120, seed=SEED, today=START.date())
    shops = await demo.load_shops(conn)
    assert 100 <= len(shops) <= 120 and all(s.uscc for s in shops)
    epoch = START - datetime.timedelta(seconds=30 * BUCKET)
    provider = demo.start(shops, SEED, bucket_seconds=BUCKET, epoch=epoch, now=clock)
    pool = await db.create_pool(db_url, max_size=4)
    try:
        sources = demo.demo_sources(provider.base_url)
        assert {s.name for s in sources} == {
            *LIVES_SOURCES, "demo-fhrs", "demo-licences", "demo-reviews", "demo-news",
        }  # fmt: skip
        await demo.register(conn, sources)
        await demo.register(conn, sources)  # an upsert: the demo registers on every start
        assert await conn.fetchval("SELECT count(*) FROM feed_source") == len(sources) == 8

        first = await pull_all(pool, sources)
        for name, r in first.items():
            c = r.counts
            assert r.status == "ok", table(first)
            assert c.inserted > 0, table(first)
            assert c.quarantined <= max(2, c.fetched // 50), table(first)
            assert c.fetched == c.inserted + c.updated + c.unchanged + c.quarantined, name
        print(table(first))
        matched = await conn.fetchval(
            "SELECT count(*) FROM sentiment_item WHERE source = 'demo-news' AND shop_id IS NOT NULL"
        )
        assert matched == await conn.fetchval(
            "SELECT count(*) FROM sentiment_item WHERE source = 'demo-news'"
        )
        assert await conn.fetchval("SELECT count(*) FROM feed_shop_map") > 0

        again = await pull_all(pool, sources)
        for r in again.values():
            assert r.status == "ok", table(again)
            assert (r.counts.inserted, r.counts.updated, r.counts.quarantined) == (0, 0, 0), table(again)
        print(table(again))

        before = {t: await conn.fetchval(f"SELECT coalesce(max(id), 0) FROM {t}") for t in TABLES}
        await conn.execute("DELETE FROM profile_dirty")
        clock.at += datetime.timedelta(seconds=BUCKET)
        later = await pull_all(pool, sources)
        print(table(later))
        assert all(r.status == "ok" for r in later.values()), table(later)
        for name in ("demo-licences", "demo-reviews", "demo-news"):
            assert later[name].counts.inserted + later[name].counts.updated > 0, table(later)
        # a bucket's few inspections fall to one LIVES shape or another
        lives_changed = sum(later[n].counts.inserted + later[n].counts.updated for n in LIVES_SOURCES)
        assert lives_changed > 0, table(later)
        touched: set[int] = set()
        for t in TABLES:
            rows = await conn.fetch(
                f"SELECT shop_id FROM {t} WHERE id > $1 AND source LIKE 'demo-%' AND shop_id IS NOT NULL",
                before[t],
            )
            touched |= {r["shop_id"] for r in rows}
        dirty = {r["shop_id"] for r in await conn.fetch("SELECT shop_id FROM profile_dirty")}
        assert touched and touched <= dirty, (touched, dirty)
    finally:
        await pool.close()
        provider.stop()


def test_the_provider_is_deterministic_and_answers_404(clock: Clock) -> None:
    shops = [
        demo.ProviderShop(
            code=f"C{i}", uscc=f"91310106MA1FL0{i:04d}", name=f"老王面馆{i}店", address=f"衡山路{i}号",
            lat=31.2, lon=121.4, phone=None, trade="catering",
        )
        for i in range(20)
    ]  # fmt: skip
    epoch = START - datetime.timedelta(seconds=5 * BUCKET)
    one = demo.Provider(shops, SEED, bucket_seconds=BUCKET, epoch=epoch, now=clock)
    two = demo.Provider(shops, SEED, bucket_seconds=BUCKET, epoch=epoch, now=clock)
    for path in (
        "/lives.zip",
        "/lives-flat.csv",
        "/lives-flat.zip",
        "/lives-min.csv",
        "/Establishments?pageNumber=1&pageSize=5",
        "/licences",
        "/reviews",
        "/news.rss",
    ):
        status, _, body = one.answer(path, {})
        assert status == 200 and body == two.answer(path, {})[2], path
    _, headers, _ = one.answer("/news.rss", {})
    assert one.answer("/news.rss", {"if-none-match": headers["etag"]})[0] == 304
    assert one.answer("/nothing", {})[0] == 404
    assert one.answer("/reviews?cursor=%%%", {})[0] == 400
