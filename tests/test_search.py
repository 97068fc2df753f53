"""Search by name: ranked exact, prefix, the rest; pages that never repeat or skip a shop; the
postings kept in step with renames, closures and new shops; and a cost that does not grow with the
number of matches (a plan property, read from EXPLAIN's buffers)."""

from __future__ import annotations

from typing import Any

import asyncpg
from litestar.testing import AsyncTestClient

from bench import search_plans
from merchant_code import search
from tests import factories


async def names(client: AsyncTestClient[Any], **params: Any) -> list[str]:
    response = await client.get("/api/v1/shops", params=params)
    assert response.status_code == 200, response.text
    return [i["name"] for i in response.json()["items"]]


async def every_page(client: AsyncTestClient[Any], **params: Any) -> list[str]:
    codes: list[str] = []
    after = ""
    while True:
        body = (await client.get("/api/v1/shops", params={**params, "after": after})).json()
        codes += [i["code"] for i in body["items"]]
        if body["next_after"] is None:
            return codes
        after = body["next_after"]


async def test_exact_names_come_first_then_prefixes_then_the_rest(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    for name in ["老王面馆", "面馆", "面馆老王", "小面馆", "面包店"]:
        await factories.shop(conn, name=name)
    ranked = await names(client, q="面馆")
    assert ranked[:2] == ["面馆", "面馆老王"] and sorted(ranked[2:]) == ["小面馆", "老王面馆"]
    longer = await names(client, q="面馆老王")
    assert longer == ["面馆老王"]
    assert await names(client, q="王面馆") == ["老王面馆"]
    assert sorted(await names(client, q="面")) == ["面包店", "面馆", "面馆老王"]  # starts with it


async def test_english_names_are_found_in_any_case(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    shop_id, _ = await factories.shop(conn, name="老王面馆")
    await conn.execute("UPDATE shop SET name_en = 'Laowang Noodles' WHERE id = $1", shop_id)
    assert await names(client, q="noodles") == ["老王面馆"]
    assert await names(client, q="NO") == ["老王面馆"]
    assert await names(client, q="l") == ["老王面馆"]


async def test_paging_through_a_common_fragment_returns_every_match_once(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    expected = set()
    for i in range(23):
        name = ["超市", f"超市{i}号", f"光明超市{i}"][i % 3] if i else "超市"
        expected.add((await factories.shop(conn, name=name))[1])
    await factories.shop(conn, name="面馆")
    codes = await every_page(client, q="超市", limit=4)
    assert len(codes) == len(expected) and set(codes) == expected
    long = await every_page(client, q="光明超市", limit=2)
    assert len(long) == len(set(long)) == 7


async def test_filters_and_a_position_combine_with_a_name(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    for name, trade, status, lat in [
        ("老王面馆", "catering", "active", 31.2000),
        ("小李面馆", "catering", "closed", 31.2001),
        ("面馆超市", "retail", "active", 31.2010),
        ("远方面馆", "catering", "active", 31.3000),
    ]:
        shop_id, _ = await factories.shop(conn, name=name, trade=trade, status=status)
        await conn.execute("UPDATE shop SET lat = $2, lon = 121.4 WHERE id = $1", shop_id, lat)
    assert await names(client, q="面馆", trade="retail") == ["面馆超市"]
    assert "小李面馆" in await names(client, q="面馆", include_closed="true")
    assert "小李面馆" not in await names(client, q="面馆")
    near = await names(client, q="面馆", lat=31.2, lon=121.4, radius_m=2000)
    assert near == ["老王面馆", "面馆超市"]
    assert await names(client, q="老王面", lat=31.2, lon=121.4) == ["老王面馆"]
    # a common fragment walks the KNN index instead of the postings: the same answer
    common = search.CAP
    search.CAP = 0
    try:
        assert await names(client, q="面馆", lat=31.2, lon=121.4, radius_m=2000) == near
        assert await names(client, q="老王面馆") == ["老王面馆"]  # the GIN intersection
    finally:
        search.CAP = common


async def test_like_wildcards_are_plain_characters(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    await factories.shop(conn, name="百分百果汁")
    await factories.shop(conn, name="100%果汁")
    await factories.shop(conn, name="a_b 小吃")
    assert await names(client, q="%") == []
    assert await names(client, q="%%") == []
    assert await names(client, q="0%果") == ["100%果汁"]
    assert await names(client, q="_") == []
    assert await names(client, q="a_b") == ["a_b 小吃"]
    assert await names(client, q="a%b") == []


async def test_postings_follow_renames_closures_and_new_shops(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    shop_id, _ = await factories.shop(conn, name="老王面馆")
    await conn.execute("UPDATE shop SET name = '老李饺子' WHERE id = $1", shop_id)
    assert await names(client, q="面馆") == []
    assert await names(client, q="饺子") == ["老李饺子"]
    await conn.execute("UPDATE shop SET status = 'closed' WHERE id = $1", shop_id)
    assert await names(client, q="饺子") == []
    assert await names(client, q="饺子", include_closed="true") == ["老李饺子"]
    await conn.execute("UPDATE shop SET updated_at = now() WHERE id = $1", shop_id)  # nothing moves
    assert await conn.fetchval("SELECT count(*) FROM shop_name_gram WHERE gram = '饺子'") == 1
    await factories.shop(conn, name="新开饺子馆")
    # both hold 饺子 inside their names: one tier, in code order (codes are random)
    assert sorted(await names(client, q="饺子", include_closed="true")) == ["新开饺子馆", "老李饺子"]


async def test_a_cursor_it_did_not_hand_out_is_a_400_naming_after(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    await factories.shop(conn, name="老王面馆")
    for params in (
        {"q": "面馆", "after": "ABC"},
        {"q": "面馆", "after": "9" + "A" * 13},
        {"after": "A" * 14},
    ):
        response = await client.get("/api/v1/shops", params=params)
        assert response.status_code == 400, (params, response.text)
        assert response.json()["errors"][0]["field"] == "after"


async def _buffers(conn: asyncpg.Connection, q: str) -> int:
    [plan] = await search_plans.explain_common(conn, [q])
    return int(plan["shared_hit"]) + int(plan["shared_read"])


async def test_a_common_fragment_reads_no_more_than_a_rare_one(conn: asyncpg.Connection) -> None:
    area_id = await factories.district(conn)
    await conn.execute(
        """INSERT INTO shop (code, uscc, name, trade, area_id, address)
           SELECT 'T' || lpad(upper(to_hex(i)), 12, '0'), '8' || lpad(i::text, 17, '0'),
                  CASE WHEN i % 10 = 0 THEN '稀有' || i ELSE '常见' || i END, 'catering', $1, '路'
           FROM generate_series(1, 3000) AS i""",
        area_id,
    )
    await conn.execute("ANALYZE shop_name_gram")
    common, rare = await _buffers(conn, "常见"), await _buffers(conn, "稀有")
    assert await conn.fetchval("SELECT count(*) FROM shop_name_gram WHERE gram = '常见'") == 2700
    assert common < 2 * rare + 10, (common, rare)
