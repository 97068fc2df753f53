"""A complaint followed to its close through the pages, on a phone (the issue's demo story): a
citizen files it from the scan page and gets a tracking number, an inspector takes it, resolves
it with a note and closes it, the citizen sees it closed with the note (and no staff name), and
the manager's dashboard shows the time it took."""

from __future__ import annotations

import asyncpg
from playwright.async_api import BrowserContext

from merchant_code import profiles
from tests import factories
from tests.pages.test_account_pages import fits_the_screen
from tests.pages.test_policy_pages import log_in
from tests.pages.test_scan_pages import shot

NOTE = "已到店核查，责令清理后厨并对冷藏设备除霜，复查合格"


async def test_a_complaint_from_the_scan_page_is_followed_to_its_close(
    server: str, phone: BrowserContext, conn: asyncpg.Connection
) -> None:
    sub1 = await factories.area(conn, "310199001", "一街道")
    shop_id, code = await factories.shop(conn, name="老王面馆", trade="catering")
    await factories.move_shop(conn, shop_id, sub1)
    await factories.account(conn, "inspector_in", "inspector", area_code="310199001", name="周检查员")
    await factories.account(conn, "manager", "manager", area_code="310199", name="张科长")
    async with conn.transaction():
        await profiles.rebuild(conn, [shop_id])

    # the citizen: scan, report, keep the number
    citizen = await phone.new_page()
    await citizen.goto(f"{server}/s/{code}")
    await citizen.click("text=我要投诉")
    await citizen.select_option("#category", "food_safety")
    await citizen.fill("#text", "冷藏柜里的肉有异味，吃完以后肚子不舒服")
    await citizen.fill("#phone", "13611112222")
    await citizen.click("button[type=submit]")
    number = (await citizen.locator("[role=status] div").nth(1).inner_text()).strip()
    assert number.startswith("TS-")
    await fits_the_screen(citizen)
    await citizen.click("a:has-text('查询办理进度')")
    await citizen.wait_for_url(f"{server}/track/{number}")
    assert await citizen.locator("#status").inner_text() == "已受理"
    await shot(citizen, "case-1-citizen-received")

    # the inspector: my area's cases, take it, start, resolve with a note, close
    inspector = await log_in(phone, server, "inspector_in")
    await inspector.click("text=辖区案件")
    await inspector.click("text=老王面馆")
    article = await inspector.locator("article").inner_text()
    # the case by its own number: the citizen's tracking number is theirs alone
    assert "CS-" in article and number not in article
    assert "13611112222" in article  # staff may call back
    await inspector.click("button:has-text('分派')")
    await inspector.click("button:has-text('开始办理')")
    await inspector.fill("#resolve-note", NOTE)
    await inspector.click("button:has-text('办结')")
    await inspector.click("button:has-text('结案')")
    trail = await inspector.locator("article").inner_text()
    assert "已关闭" in trail and NOTE in trail
    await fits_the_screen(inspector)
    await shot(inspector, "case-2-inspector-closed")

    # the citizen again: closed, with the note; nobody's name
    await citizen.reload()
    assert await citizen.locator("#status").inner_text() == "已关闭"
    page = await citizen.content()
    assert NOTE in page and "周检查员" not in page and "inspector_in" not in page
    await shot(citizen, "case-3-citizen-closed")

    # the manager: the dashboard shows it opened and closed, and how long it took
    manager = await log_in(phone, server, "manager")
    await manager.click("text=监管效能看板")
    assert await manager.locator("#total-opened").inner_text() == "1"
    assert await manager.locator("#total-closed").inner_text() == "1"
    median = await manager.locator("#total-median").inner_text()
    assert median not in ("", "—") and float(median) < 1
    assert await manager.locator("svg.chart").count() >= 1
    await fits_the_screen(manager)
    await shot(manager, "case-4-dashboard")
