"""Logging in, changing a password and claiming a shop, on a phone, in Chinese and in English."""

from __future__ import annotations

import os
import re
from pathlib import Path

import asyncpg
from playwright.async_api import BrowserContext, Page

from merchant_code import accounts
from tests import factories
from tests import world as w


async def fits_the_screen(page: Page) -> None:
    """Nothing wider than the phone: no sideways scrolling to read or to reach a button.
    With PAGE_SCREENSHOTS=<folder>, each checked page is also saved there to look at."""
    if folder := os.environ.get("PAGE_SCREENSHOTS"):
        name = re.sub(r"[^A-Za-z0-9]+", "_", page.url.split("//", 1)[1].split("/", 1)[1])
        await page.screenshot(path=str(Path(folder) / f"{name or 'root'}.png"), full_page=True)
    overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    for button in await page.locator("button").all():
        box = await button.bounding_box()
        assert box is not None and box["height"] >= 44  # a thumb-sized target


async def test_an_inspector_logs_in_changes_the_password_and_logs_out(
    server: str, phone: BrowserContext, conn: asyncpg.Connection
) -> None:
    await factories.area(conn, "310199001", "一街道")
    await factories.account(conn, "li.inspector", "inspector", area_code="310199001", name="李检查员")
    page = await phone.new_page()

    await page.goto(f"{server}/me")  # not logged in: sent to the login page, and back after it
    assert "/login?next=/me" in page.url
    assert await page.get_attribute("html", "lang") == "zh-CN"
    await fits_the_screen(page)
    await page.fill("#login", "li.inspector")
    await page.fill("#password", "wrong password")
    await page.click("button[type=submit]")
    assert "账号或密码错误" in await page.locator("[role=alert]").inner_text()

    await page.fill("#password", w.PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{server}/me")
    assert await page.locator("h1").inner_text() == "李检查员"
    assert "执法检查员" in await page.content() and "310199001" in await page.content()
    await fits_the_screen(page)
    cookies = await phone.cookies()
    session = next(c for c in cookies if c["name"] == "mc_session")
    assert session["httpOnly"] and session["sameSite"] == "Lax"
    assert await page.evaluate("document.cookie") == ""  # scripts cannot read the session

    await page.fill("#current_password", w.PASSWORD)
    await page.fill("#new_password", "a fresh password 2026")
    await page.click("form[action^='/me/password'] button")
    await page.wait_for_url(f"{server}/me?changed=true")
    assert "密码已修改" in await page.locator("[role=status]").inner_text()

    await page.click("text=退出登录")
    await page.wait_for_url(f"{server}/login")
    await page.goto(f"{server}/me")
    assert "/login" in page.url


async def test_a_shop_owner_claims_their_shop_in_english(
    server: str, phone: BrowserContext, conn: asyncpg.Connection
) -> None:
    _, code = await factories.shop(conn, name="老王面馆", owner_phone="13812341234")
    claim_code = await accounts.issue_claim_code(conn, code)
    page = await phone.new_page()
    await page.goto(f"{server}/claim?lang=en")
    assert await page.get_attribute("html", "lang") == "en"
    await fits_the_screen(page)
    await page.fill("#shop_code", code.lower())
    await page.fill("#claim_code", "AAAA-BBBB-CCCC-DDDD")
    await page.fill("#phone", "138 1234 1234")
    await page.fill("#login", "wang")
    await page.fill("#password", "my shop password")
    await page.click("button[type=submit]")
    assert "do not match" in await page.locator("[role=alert]").inner_text()
    assert await page.input_value("#shop_code") == code.lower()  # what was typed is kept...
    assert await page.input_value("#password") == ""  # ...except the password

    await page.fill("#claim_code", claim_code)
    await page.fill("#password", "my shop password")
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{server}/s/{code}")
    assert "老王面馆" in await page.locator("h1").inner_text()
    await page.goto(f"{server}/me?lang=en")
    assert code in await page.locator("text=My shops >> xpath=..").inner_text()
