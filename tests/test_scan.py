"""A citizen scanning a sticker sees the shop's public record and nothing personal."""

from __future__ import annotations

import datetime
from typing import Any

import asyncpg
from litestar.testing import AsyncTestClient

from tests import factories

TODAY = datetime.date.today()
JSON = {"accept": "application/json"}


async def test_a_scan_shows_licence_states_latest_grade_and_rating(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    shop_id, code = await factories.shop(conn)
    await factories.licence(conn, shop_id, kind="business", valid_to=None)
    await factories.licence(conn, shop_id, kind="food_business", valid_to=TODAY + datetime.timedelta(days=10))
    await factories.licence(conn, shop_id, kind="hygiene", valid_to=TODAY - datetime.timedelta(days=1))
    await factories.inspection(
        conn, shop_id, on=TODAY - datetime.timedelta(days=400), grade="C", result="fail"
    )
    await factories.inspection(conn, shop_id, on=TODAY - datetime.timedelta(days=20), grade="A")
    for rating in (5, 4):
        await factories.review(conn, shop_id, rating)

    body = (await client.get(f"/s/{code}", headers=JSON)).json()

    states = {lic["kind"]: lic["state"] for lic in body["licences"]}
    assert states == {"business": "valid", "food_business": "expiring", "hygiene": "expired"}
    assert body["grade"] == "A"
    assert body["last_inspected_on"] == str(TODAY - datetime.timedelta(days=20))
    assert (body["rating"], body["review_count"]) == (4.5, 2)


async def test_a_citizen_never_receives_the_owners_personal_data_or_internal_id(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    _, code = await factories.shop(conn, owner_name="李秀英", owner_phone="13912345678")
    for headers in (JSON, {"accept": "text/html"}):
        text = (await client.get(f"/s/{code}", headers=headers)).text
        assert "李秀英" not in text and "13912345678" not in text and "310104198001011234" not in text
    body = (await client.get(f"/s/{code}", headers=JSON)).json()
    assert "id" not in body and "shop_id" not in body


async def test_the_page_is_chinese_by_default_and_english_on_request(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    _, code = await factories.shop(conn)
    zh = await client.get(f"/s/{code}")
    assert zh.status_code == 200 and zh.headers["content-type"].startswith("text/html")
    assert 'lang="zh-CN"' in zh.text and "证照" in zh.text
    en = await client.get(f"/s/{code}?lang=en")
    assert 'lang="en"' in en.text and "Licences" in en.text


async def test_a_closed_shop_says_so(client: AsyncTestClient[Any], conn: asyncpg.Connection) -> None:
    _, code = await factories.shop(conn, status="closed")
    assert "该商户已歇业" in (await client.get(f"/s/{code}")).text


async def test_a_shop_name_cannot_inject_markup(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    _, code = await factories.shop(conn, name="<script>alert(1)</script>面馆")
    page = (await client.get(f"/s/{code}")).text
    assert "<script>alert(1)" not in page and "&lt;script&gt;" in page


async def test_a_mistyped_code_is_refused_before_any_query(client: AsyncTestClient[Any]) -> None:
    response = await client.get("/s/ABC", headers=JSON)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "code"


async def test_an_unknown_but_well_formed_code_is_not_found(client: AsyncTestClient[Any]) -> None:
    from merchant_code.codes import new_shop_code

    response = await client.get(f"/s/{new_shop_code()}", headers=JSON)
    assert response.status_code == 404
    assert "not valid" in response.json()["detail"]
