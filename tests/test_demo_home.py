"""`/` in demo mode shows where to look; outside demo mode nothing is served there."""

from __future__ import annotations

import datetime

import asyncpg
import msgspec
from litestar.testing import AsyncTestClient

from merchant_code import district
from merchant_code.app import create_app
from merchant_code.settings import Settings


async def test_the_demo_home_page_lists_scan_pages_and_the_demo_logins(
    conn: asyncpg.Connection, settings: Settings
) -> None:
    await district.seed_district(conn, shops=40, seed=7, today=datetime.date(2026, 3, 1))
    demo = msgspec.structs.replace(settings, demo=True, demo_seed=7)
    async with AsyncTestClient(app=create_app(demo)) as client:
        page = await client.get("/", params={"lang": "en"})
    assert page.status_code == 200
    shops = [r["code"] for r in await conn.fetch("SELECT code FROM shop WHERE status = 'active'")]
    assert any(f"{demo.base_url}/s/{code}" in page.text for code in shops)
    for login in district.demo_logins(7):
        assert f"<code>{login.login}</code> / <code>{login.password}</code>" in page.text
    assert "merchant-code shop claim-code" in page.text


async def test_outside_demo_mode_nothing_is_at_the_root(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    answer = await client.get("/")
    assert answer.status_code == 404
    assert "password" not in answer.text
