"""The sticker's page in a real phone browser: a citizen reads it (without JavaScript too), and
the whole demo story runs through the pages: the merchant adds a licence, an inspector verifies
it and files an inspection, and the citizen page changes. Screenshots are kept as artifacts in
`test-artifacts/`."""

from __future__ import annotations

import datetime
from pathlib import Path

import asyncpg
from playwright.async_api import Browser, BrowserContext, Page

from merchant_code import db, profiles, qr
from merchant_code.district import demo_logins, seed_district
from merchant_code.settings import Settings
from tests import factories, waiting
from tests.pages.conftest import PHONE
from tests.pages.test_account_pages import fits_the_screen
from tests.test_scan import forged, signature_of

ARTIFACTS = Path(__file__).resolve().parent.parent.parent / "test-artifacts"
SEED = 11


def today() -> datetime.date:
    """The server under test reads the real clock, so the pages' dates are read at the moment of
    use, never at import (a long run may cross midnight)."""
    return datetime.date.today()


async def shot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000  # a page was drawn, not a blank
    return path


async def demo_shop(conn: asyncpg.Connection) -> tuple[str, str]:
    await seed_district(conn, shops=80, seed=SEED, today=today())
    row = await db.queries.get_demo_merchant_shop(conn, login="merchant")
    assert row is not None
    return row["code"], row["name"]


async def test_a_citizen_reads_a_demo_shop_on_a_phone(
    server: str, phone: BrowserContext, browser: Browser, conn: asyncpg.Connection
) -> None:
    code, name = await demo_shop(conn)
    page = await phone.new_page()
    response = await page.goto(f"{server}/s/{code}")
    assert response is not None and response.status == 200
    assert await page.locator("h1").inner_text() == name
    assert await page.get_attribute("html", "lang") == "zh-CN"
    assert "食品安全等级" in await page.content()
    await fits_the_screen(page)
    await shot(page, "scan-citizen-zh")
    await page.goto(f"{server}/s/{code}?lang=en")
    assert "Food-safety grade" in await page.content()
    await shot(page, "scan-citizen-en")

    # readable without JavaScript: everything is in the HTML
    plain = await browser.new_context(viewport=PHONE, locale="zh-CN", java_script_enabled=False)
    try:
        bare = await plain.new_page()
        await bare.goto(f"{server}/s/{code}")
        assert await bare.locator("h1").inner_text() == name
        assert await bare.locator("text=我要投诉").is_visible()
    finally:
        await plain.close()


async def _log_in(context: BrowserContext, server: str, login: str, password: str) -> Page:
    page = await context.new_page()
    await page.goto(f"{server}/login")
    await page.fill("#login", login)
    await page.fill("#password", password)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{server}/me")
    return page


async def test_the_demo_story_merchant_adds_a_licence_inspector_verifies_and_inspects(
    server: str, browser: Browser, phone: BrowserContext, conn: asyncpg.Connection
) -> None:
    code, _ = await demo_shop(conn)
    logins = {login.role: login for login in demo_logins(SEED)}
    citizen = await phone.new_page()
    await citizen.goto(f"{server}/s/{code}")
    assert "JY99990001" not in await citizen.content()

    merchant_ctx = await browser.new_context(viewport=PHONE, locale="zh-CN")
    inspector_ctx = await browser.new_context(viewport=PHONE, locale="zh-CN")
    try:
        merchant = await _log_in(merchant_ctx, server, "merchant", logins["merchant"].password)
        await merchant.goto(f"{server}/s/{code}")
        assert "您的店铺" in await merchant.content()
        await fits_the_screen(merchant)
        await merchant.select_option("#lic-kind", "hygiene")
        await merchant.fill("#lic-number", "JY99990001")
        await merchant.fill("#lic-from", str(today()))
        await merchant.fill("#lic-to", str(today() + datetime.timedelta(days=730)))
        await merchant.click("form[action^='/s/'][action*='/licences'] button")
        await merchant.wait_for_url(f"{server}/s/{code}?done=licences#forms")
        assert "已提交，经执法人员核验后生效" in await merchant.locator("[role=status]").inner_text()
        await shot(merchant, "scan-merchant")

        inspector = await _log_in(inspector_ctx, server, "inspector", logins["inspector"].password)
        await inspector.goto(f"{server}/s/{code}")
        assert "风险评分" in await inspector.content()
        form = inspector.locator("form", has_text="JY99990001")
        await form.locator("button[value=verify]").click()
        await inspector.wait_for_url(f"{server}/s/{code}?done=review#forms")
        await inspector.check("input[name=result][value=rectify]")
        await inspector.select_option("#in-grade", "B")
        await inspector.check("input[name=violations][value=V08]")
        await inspector.fill("#in-due", str(today() + datetime.timedelta(days=10)))
        await inspector.click("form[action$='/inspections'] button[type=submit]")
        await inspector.wait_for_url(f"{server}/s/{code}?done=inspection#forms")
        await fits_the_screen(inspector)
        await shot(inspector, "scan-inspector")
    finally:
        await merchant_ctx.close()
        await inspector_ctx.close()

    # the citizen page changes (the profile is rebuilt right after each write, off the request)
    text = ""

    async def rebuilt() -> bool:
        nonlocal text
        await citizen.reload()
        text = await citizen.content()
        return "限期整改" in text and "卫生许可证" in text

    await waiting.until(rebuilt, 10, "the citizen page to show the inspection and the licence")
    assert "限期整改" in text and "加工场所环境卫生不整洁" in text
    assert await citizen.locator(".face").inner_text() == "B"
    assert "卫生许可证" in text and "JY99990001" not in text  # the citizen sees the state, not the number
    await shot(citizen, "scan-citizen-after")


async def test_a_forged_sticker_warns_at_the_top_of_the_page_and_says_how_to_report_it(
    server: str, phone: BrowserContext, conn: asyncpg.Connection, db_url: str, tmp_path: Path
) -> None:
    _, code = await factories.shop(conn, name="老王面馆")
    await profiles.drain(conn)
    # the server's own key, made when it started, in the data folder it shares with this test
    port = int(server.rsplit(":", 1)[1])
    key = await qr.ensure_signing_key(conn, Settings(database_url=db_url, data_dir=str(tmp_path), port=port))
    genuine = signature_of(key.payload(server, code))
    page = await phone.new_page()
    for lang, words, report in (
        ("zh", ("该二维码不是正品", "12315"), "在线投诉"),
        ("en", ("This sticker is not genuine", "12315"), "report it online"),
    ):
        await page.goto(f"{server}/s/{code}?q={forged(genuine)}&lang={lang}")
        warning = page.locator("#sticker")
        assert await warning.get_attribute("data-sticker") == "forged"
        text = await warning.inner_text()
        assert await warning.is_visible() and all(w in text for w in words) and report in text
        box, title = await warning.bounding_box(), await page.locator("h1").bounding_box()
        assert box is not None and title is not None and box["y"] < title["y"]  # read before the shop
        await fits_the_screen(page)
        await shot(page, f"scan-forged-sticker-{lang}")
    await page.locator("#sticker a", has_text="report it online").click()
    await page.wait_for_url(f"{server}/s/{code}/complaint?lang=en")

    await page.goto(f"{server}/s/{code}?q={genuine}")
    assert await page.locator("#sticker").get_attribute("data-sticker") == "genuine"
    assert "正品二维码" in await page.locator("#sticker").inner_text()
    await shot(page, "scan-genuine-sticker-zh")
