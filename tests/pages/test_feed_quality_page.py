"""The feeds' data-quality page on a phone: a manager finds it from their page, sees the failing
source marked with its measures and small charts, in Chinese and in English."""

from __future__ import annotations

import datetime

import asyncpg
from playwright.async_api import BrowserContext

from tests import factories
from tests.pages.test_account_pages import fits_the_screen
from tests.pages.test_policy_pages import log_in
from tests.pages.test_scan_pages import shot
from tests.test_feeds_quality import inspection, lives_source, past_run


async def test_a_manager_sees_each_sources_quality_with_its_charts(
    server: str, phone: BrowserContext, conn: asyncpg.Connection
) -> None:
    shops = [(await factories.shop(conn, name=f"店{i}"))[0] for i in range(4)]
    await factories.account(conn, "manager", "manager", area_code="310199", name="张科长")
    source_id = await lives_source(conn)
    now = datetime.datetime.now(datetime.UTC)
    await conn.execute("UPDATE feed_source SET last_success_at = $1 WHERE id = $2", now, source_id)
    for hours in (30, 20, 10):  # a pull history for the sparkline, the last with much quarantined
        await past_run(conn, source_id, now - datetime.timedelta(hours=hours), fetched=40 - hours)
    await past_run(conn, source_id, now - datetime.timedelta(hours=1), fetched=20, quarantined=12)
    await conn.execute(
        "INSERT INTO feed_reject (run_id, last_run_id, source_id, external_id, record_key, raw, reason)"
        " SELECT (SELECT max(id) FROM feed_run), (SELECT max(id) FROM feed_run), $1, 'x' || n, 'x' || n,"
        " 'raw',"
        " CASE WHEN n < 9 THEN 'no shop in the register matches this record' ELSE 'bad date' END"
        " FROM generate_series(1, 12) n",
        source_id,
    )
    day = datetime.date(2026, 5, 1)
    for n in range(30):  # scores before and in the last pull
        fetched = now - datetime.timedelta(hours=1 if n >= 20 else 20)
        await inspection(conn, shops[n % 4], n, day=day + datetime.timedelta(days=n), score=60 + n,
                         result="pass", fetched=fetched)  # fmt: skip

    page = await log_in(phone, server, "manager")
    await page.click("text=数据源质量")
    await page.wait_for_url(f"{server}/manage/feeds")
    card = page.locator("#source-city-lives")
    assert "不达标" in await card.inner_text()
    assert await card.locator("li.bad[data-measure=quarantine]").count() == 1
    assert await card.locator("svg.spark circle").count() == 4
    assert await card.locator("svg.bars rect").count() == 2
    assert await card.locator("svg.hist rect").count() == 20
    await fits_the_screen(page)
    await shot(page, "feed-quality-zh")

    await page.goto(f"{server}/manage/feeds?lang=en")
    assert "Quarantine by reason" in await page.locator("#source-city-lives").inner_text()
    await fits_the_screen(page)
    await shot(page, "feed-quality-en")
