"""Policy pushes through the pages, on a phone: a manager schedules a policy for catering a minute
ahead, at that minute the merchant's inbox shows it, and the reach counts move as it is read.

The scheduler is off in the page tests' server, so "that minute" is the test calling the same
jobs the scheduler runs (`send_due`, then `deliver_inbox`) with the clock at the scheduled time.
"""

from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo

import asyncpg
from playwright.async_api import Browser, BrowserContext, Page, ViewportSize

from merchant_code import policies
from tests import factories
from tests import world as w
from tests.pages.conftest import PHONE
from tests.pages.test_account_pages import fits_the_screen
from tests.pages.test_scan_pages import shot

TZ = "Asia/Shanghai"  # the server's default time zone: datetime-local fields are read in it
TITLE = "关于开展夏季食品安全专项检查的通知"
BODY = "各餐饮单位：\n\n请于本月底前完成**后厨自查**，并保存记录。\n\n- 冷藏温度\n- 餐具消毒\n"


async def log_in(context: BrowserContext, server: str, login: str) -> Page:
    page = await context.new_page()
    await page.goto(f"{server}/login")
    await page.fill("#login", login)
    await page.fill("#password", w.PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{server}/me")
    return page


async def two_subdistricts(conn: asyncpg.Connection) -> None:
    """Subdistrict 001: a catering shop (merchant_a's) and a retail shop; subdistrict 002: another
    catering shop. Only the first is catering *in 001*. The manager has the whole district."""
    sub1 = await factories.area(conn, "310199001", "一街道")
    sub2 = await factories.area(conn, "310199002", "二街道")
    catering, _ = await factories.shop(conn, name="老王面馆", trade="catering")
    retail, _ = await factories.shop(conn, name="便民超市", trade="retail")
    elsewhere, _ = await factories.shop(conn, name="二街饺子馆", trade="catering")
    await factories.move_shop(conn, catering, sub1)
    await factories.move_shop(conn, retail, sub1)
    await factories.move_shop(conn, elsewhere, sub2)
    await factories.account(conn, "merchant_a", "merchant", shop_ids=(catering,), name="王老板")
    await factories.account(conn, "manager", "manager", area_code="310199", name="张科长")


async def reach(page: Page) -> tuple[int, int, int]:
    counts = [int(await page.locator(f"#{k}").inner_text()) for k in ("targeted", "delivered", "read")]
    return counts[0], counts[1], counts[2]


async def test_a_policy_scheduled_a_minute_ahead_reaches_the_merchant_and_is_read(
    server: str, browser: Browser, phone: BrowserContext, conn: asyncpg.Connection
) -> None:
    await two_subdistricts(conn)
    # "a minute ahead", to the minute a datetime-local field holds: 60 to 120 s from now, so that it
    # is still ahead when the form is sent after the preview
    now = datetime.datetime.now(ZoneInfo(TZ))
    at = (now + datetime.timedelta(minutes=2)).replace(second=0, microsecond=0)

    manager = await log_in(phone, server, "manager")
    await manager.click("text=政策推送")
    await manager.wait_for_url(f"{server}/manage/policies")
    assert "暂无" in await manager.locator("section", has_text="推送记录").inner_text()
    await fits_the_screen(manager)
    await manager.fill("#title", TITLE)
    await manager.fill("#body_md", BODY)
    await manager.check("input[name=trades][value=catering]")
    await manager.select_option("#area_codes", "310199001")
    await manager.check("input[name=send][value=at]")
    await manager.fill("input[name=send_at]", at.strftime("%Y-%m-%dT%H:%M"))

    async with manager.expect_navigation() as previewed:
        await manager.click("button[value=preview]")
    response = await previewed.value
    assert response is not None and response.status == 200
    assert await manager.locator("#audience strong").inner_text() == "1"
    # the preview keeps everything typed, ready to be scheduled
    assert await manager.input_value("#title") == TITLE
    assert await manager.input_value("#body_md") == BODY.strip()
    assert await manager.is_checked("input[name=trades][value=catering]")
    assert not await manager.is_checked("input[name=trades][value=retail]")
    assert await manager.eval_on_selector("#area_codes", "s => [...s.selectedOptions].map(o => o.value)") == [
        "310199001"
    ]
    assert await manager.is_checked("input[name=send][value=at]")
    assert await manager.input_value("input[name=send_at]") == at.strftime("%Y-%m-%dT%H:%M")
    await fits_the_screen(manager)
    await shot(manager, "policy-manager-preview")

    await manager.click("button[value=send]")
    await manager.wait_for_url(f"{server}/manage/policies/*")
    policy_url = manager.url
    assert await manager.locator("h1").inner_text() == TITLE
    assert await manager.locator(".policy-body strong").inner_text() == "后厨自查"
    assert await reach(manager) == (0, 0, 0)  # nothing has gone out yet
    assert "待发送" in await manager.locator("article .muted").first.inner_text()
    due = at.strftime("%Y-%m-%d %H:%M")  # shown in the regulator's time, as it was typed
    assert due in await manager.locator("article").inner_text()
    assert await manager.locator("button", has_text="取消推送").is_visible()
    await fits_the_screen(manager)
    await shot(manager, "policy-manager-scheduled")

    # the minute before: nothing is due; at the minute: the scheduler's jobs send it
    assert await policies.send_due(conn, TZ, now=at - datetime.timedelta(seconds=1)) == 0
    assert await policies.send_due(conn, TZ, now=at + datetime.timedelta(seconds=1)) == 1
    assert await policies.deliver_inbox(conn) == 1

    await manager.goto(f"{policy_url}?days=0")
    assert await reach(manager) == (1, 1, 0)
    assert "已发送" in await manager.locator("article .muted").first.inner_text()
    unread_card = manager.locator("section", has_text="天未读")
    assert "(1)" in await unread_card.locator("h2").inner_text()
    assert "老王面馆" in await unread_card.inner_text() and "一街道" in await unread_card.inner_text()
    assert not await manager.locator("button", has_text="取消推送").count()  # too late to cancel

    viewport = ViewportSize(width=PHONE["width"], height=PHONE["height"])
    merchant_ctx = await browser.new_context(
        viewport=viewport, locale="zh-CN", is_mobile=True, has_touch=True
    )
    try:
        merchant = await log_in(merchant_ctx, server, "merchant_a")
        assert await merchant.locator("#unread").inner_text() == "1"
        await merchant.click("text=政策消息")
        await merchant.wait_for_url(f"{server}/inbox")
        assert await merchant.locator("h1 .badge").inner_text() == "1"
        unread = merchant.locator("ul.inbox li.unread")
        assert await unread.count() == 1
        assert TITLE in await unread.inner_text() and "老王面馆" in await unread.inner_text()
        assert "行业通知" in await unread.inner_text()  # to the whole trade, not about this shop
        for tab in await merchant.locator(".tabs a").all():  # thumb-sized filters
            box = await tab.bounding_box()
            assert box is not None and box["height"] >= 44
        await fits_the_screen(merchant)
        await shot(merchant, "policy-merchant-inbox")

        await unread.locator("a").click()
        await merchant.wait_for_url(f"{server}/inbox/*")
        assert await merchant.locator("h1").inner_text() == TITLE
        body = merchant.locator(".policy-body")
        assert await body.locator("strong").inner_text() == "后厨自查"  # Markdown, rendered
        assert await body.locator("li").all_inner_texts() == ["冷藏温度", "餐具消毒"]
        assert "**" not in await body.inner_text()
        await fits_the_screen(merchant)
        await shot(merchant, "policy-merchant-item")

        await merchant.click("text=← 政策消息")
        await merchant.wait_for_url(f"{server}/inbox")
        assert await merchant.locator("ul.inbox li.unread").count() == 0
        assert await merchant.locator("ul.inbox li").count() == 1
        assert await merchant.locator("h1 .badge").count() == 0
        await merchant.goto(f"{server}/me")
        assert await merchant.locator("#unread").count() == 0

        await merchant.goto(f"{server}/inbox?lang=en")
        assert await merchant.get_attribute("html", "lang") == "en"
        assert (await merchant.locator("h1").inner_text()).strip() == "Inbox"
        assert "For the trade" in await merchant.locator("ul.inbox").inner_text()
        await fits_the_screen(merchant)
        await shot(merchant, "policy-merchant-inbox-en")
    finally:
        await merchant_ctx.close()

    await manager.reload()
    assert await reach(manager) == (1, 1, 1)
    assert "(0)" in await manager.locator("section", has_text="天未读").locator("h2").inner_text()
    assert "老王面馆" not in await manager.locator("section", has_text="天未读").inner_text()
    await fits_the_screen(manager)
    await shot(manager, "policy-manager-read")
    await manager.goto(f"{server}/manage/policies")
    assert "送达 1 · 已读 1" in await manager.locator("section", has_text="推送记录").inner_text()


async def test_a_policy_form_with_mistakes_is_shown_again_with_what_was_typed(
    server: str, phone: BrowserContext, conn: asyncpg.Connection
) -> None:
    await two_subdistricts(conn)
    manager = await log_in(phone, server, "manager")
    await manager.goto(f"{server}/manage/policies")
    past = datetime.datetime.now(ZoneInfo(TZ)) - datetime.timedelta(hours=1)
    await manager.fill("#title", TITLE)
    await manager.fill("#body_md", BODY)
    await manager.check("input[name=trades][value=catering]")
    await manager.select_option("#area_codes", "310199001")
    await manager.check("input[name=send][value=at]")
    await manager.fill("input[name=send_at]", past.strftime("%Y-%m-%dT%H:%M"))
    async with manager.expect_navigation() as sent:
        await manager.click("button[value=send]")
    response = await sent.value
    assert response is not None and response.status == 422
    alert = await manager.locator("[role=alert]").inner_text()
    assert "发送时间" in alert and "past" in alert
    assert await manager.input_value("#title") == TITLE
    assert await manager.input_value("#body_md") == BODY.strip()
    assert await manager.is_checked("input[name=trades][value=catering]")
    assert await manager.eval_on_selector("#area_codes", "s => [...s.selectedOptions].map(o => o.value)") == [
        "310199001"
    ]
    assert await manager.is_checked("input[name=send][value=at]")
    assert await manager.input_value("input[name=send_at]") == past.strftime("%Y-%m-%dT%H:%M")
    assert await manager.get_attribute("input[name=send_at]", "aria-invalid") == "true"
    await fits_the_screen(manager)
    await shot(manager, "policy-manager-error")

    # an empty title (the browser's `required` taken off, as a client without it would send it)
    await manager.eval_on_selector("#title", "e => { e.required = false; e.value = ''; }")
    await manager.check("input[name=send][value=now]")
    async with manager.expect_navigation() as sent:
        await manager.click("button[value=send]")
    response = await sent.value
    assert response is not None and response.status == 422
    assert "标题" in await manager.locator("[role=alert]").inner_text()
    assert await manager.input_value("#body_md") == BODY.strip()
    assert await manager.get_attribute("#title", "aria-invalid") == "true"
    assert await conn.fetchval("SELECT count(*) FROM policy") == 0  # nothing was scheduled

    await manager.goto(f"{server}/manage/policies?lang=en")
    await manager.fill("#title", TITLE)
    await manager.fill("#body_md", BODY)
    await manager.select_option("#area_codes", "310199001")
    await manager.check("input[name=send][value=at]")
    await manager.fill("input[name=send_at]", past.strftime("%Y-%m-%dT%H:%M"))
    async with manager.expect_navigation() as sent:
        await manager.click("button[value=send]")
    response = await sent.value
    assert response is not None and response.status == 422
    assert "Send at" in await manager.locator("[role=alert]").inner_text()
