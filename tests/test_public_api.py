"""The public API: search (by name, trade, area, grade and distance), one shop's public profile,
the change feed; caching headers and rate limits on every answer."""

from __future__ import annotations

from typing import Any

import asyncpg
from litestar.testing import AsyncTestClient

from merchant_code import profiles
from tests import factories
from tests import world as w
from tests.watermark import caught_up


async def district(conn: asyncpg.Connection) -> dict[str, tuple[int, str]]:
    """Shops around (31.2000 N, 121.4000 E): 0 m, ~110 m north, ~1 km east, ~5 km north."""
    sub1 = await factories.area(conn, "310199001", "一街道")
    sub2 = await factories.area(conn, "310199002", "二街道")
    shops = {}
    for name, trade, area, lat, lon, status in [
        ("老王面馆", "catering", sub1, 31.2000, 121.4000, "active"),
        ("小李面馆", "catering", sub1, 31.2010, 121.4000, "active"),
        ("光明超市", "retail", sub1, 31.2000, 121.4105, "active"),
        ("远方面馆", "catering", sub2, 31.2450, 121.4000, "active"),
        ("关门面馆", "catering", sub2, 31.2005, 121.4001, "closed"),
    ]:
        shop_id, code = await factories.shop(conn, name=name, trade=trade, status=status)
        await factories.move_shop(conn, shop_id, area)
        await conn.execute("UPDATE shop SET lat = $2, lon = $3 WHERE id = $1", shop_id, lat, lon)
        shops[name] = (shop_id, code)
    await factories.inspection(conn, shops["小李面馆"][0], on=__import__("datetime").date.today(), grade="B")
    async with conn.transaction():
        await profiles.rebuild(conn, [s for s, _ in shops.values()])
    return shops


async def names(client: AsyncTestClient[Any], **params: Any) -> list[str]:
    response = await client.get("/api/v1/shops", params=params)
    assert response.status_code == 200, response.text
    return [i["name"] for i in response.json()["items"]]


async def test_search_by_name_trade_area_grade(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    await district(conn)
    assert sorted(await names(client, q="面馆")) == sorted(
        ["老王面馆", "小李面馆", "远方面馆"]
    )  # never closed
    assert "关门面馆" in await names(client, q="面馆", include_closed="true")
    assert await names(client, trade="retail") == ["光明超市"]
    assert sorted(await names(client, area="310199002")) == ["远方面馆"]
    assert await names(client, grade="B") == ["小李面馆"]
    assert len(await names(client, area="310199")) == 4
    unknown = await client.get("/api/v1/shops", params={"area": "999999"})
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "area"
    too_many = await client.get("/api/v1/shops", params={"limit": 101})
    assert too_many.status_code == 400 and "limit" in too_many.text


async def test_pages_follow_the_cursor(client: AsyncTestClient[Any], conn: asyncpg.Connection) -> None:
    await district(conn)
    first = (await client.get("/api/v1/shops", params={"limit": 2})).json()
    second = (await client.get("/api/v1/shops", params={"limit": 2, "after": first["next_after"]})).json()
    codes = [i["code"] for i in first["items"] + second["items"]]
    assert len(codes) == 4 and codes == sorted(codes)
    third = (await client.get("/api/v1/shops", params={"limit": 2, "after": second["next_after"]})).json()
    assert third == {"items": [], "next_after": None, "next_offset": None}


async def test_nearest_first_within_the_radius(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    await district(conn)
    near = (await client.get("/api/v1/shops", params={"lat": 31.2, "lon": 121.4, "radius_m": 2000})).json()
    got = [(i["name"], i["distance_m"]) for i in near["items"]]
    assert [n for n, _ in got] == ["老王面馆", "小李面馆", "光明超市"]
    assert got[0][1] == 0 and 100 <= got[1][1] <= 120 and 950 <= got[2][1] <= 1050
    wide = await names(client, lat=31.2, lon=121.4, radius_m=6000, q="面馆")
    assert wide == ["老王面馆", "小李面馆", "远方面馆"]
    half = await client.get("/api/v1/shops", params={"lat": 31.2})
    assert half.status_code == 422 and half.json()["errors"][0]["field"] == "lon"


async def test_one_shop_public_profile_with_caching_headers(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)
    async with conn.transaction():
        await profiles.rebuild(conn, [world.shop_a_id])
    await caught_up(client.app)  # the worker knows the world's notice (joined to the answer)
    response = await client.get(f"/api/v1/shops/{world.shop_a}")
    assert response.status_code == 200
    body = response.json()
    assert body["code"] == world.shop_a and "freshness" in body and body["profile_version"] >= 1
    assert [n["title"] for n in body["notices"]] == ["夏季食品安全"]
    assert not [v for v in w.PII.values() if v in response.text]
    etag, modified = response.headers["etag"], response.headers["last-modified"]
    assert (
        await client.get(f"/api/v1/shops/{world.shop_a}", headers={"if-none-match": etag})
    ).status_code == 304
    assert (
        await client.get(f"/api/v1/shops/{world.shop_a}", headers={"if-modified-since": modified})
    ).status_code == 304
    assert (await client.get("/api/v1/shops/ZZZZZZZZZZZZZ")).status_code in (404, 422)


async def test_the_change_feed_follows_every_profile_write(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    shops = await district(conn)
    everything = (await client.get("/api/v1/changes", params={"since": 0, "limit": 1000})).json()
    assert len({i["code"] for i in everything["items"]}) == 5
    cursor = everything["next_since"]
    assert (await client.get("/api/v1/changes", params={"since": cursor})).json()["items"] == []
    shop_id, code = shops["远方面馆"]
    await factories.inspection(
        conn, shop_id, on=__import__("datetime").date.today(), result="fail", grade="C"
    )
    async with conn.transaction():
        await profiles.rebuild(conn, [shop_id])
    changed = (await client.get("/api/v1/changes", params={"since": cursor})).json()
    assert [(i["code"], i["profile"]["grade"]) for i in changed["items"]] == [(code, "C")]
    assert changed["next_since"] > cursor
    # pages of one
    one = (await client.get("/api/v1/changes", params={"since": 0, "limit": 1})).json()
    assert len(one["items"]) == 1 and one["next_since"] == one["items"][0]["seq"]


async def test_every_answer_carries_rate_limit_headers_and_a_flood_is_stopped(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    from merchant_code.client_limits import PUBLIC_RATE

    await district(conn)
    first = await client.get("/api/v1/shops")
    assert first.headers["ratelimit-limit"] == str(PUBLIC_RATE)
    assert int(first.headers["ratelimit-remaining"]) == PUBLIC_RATE - 1
    assert first.headers["ratelimit-policy"] == f"{PUBLIC_RATE};w=60"
    for path in ("/api/v1/changes", "/api/v1/shops?area=999999"):  # errors count and say so too
        assert "ratelimit-remaining" in (await client.get(path)).headers
    # the minute's worth at once, then (a little more as the bucket refills, then) 429
    answered = 3
    while (refused := await client.get("/api/v1/changes?limit=1")).status_code == 200:
        answered += 1
        assert answered < 2 * PUBLIC_RATE, "the flood was never stopped"
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert refused.json()["status"] == 429
    assert answered >= PUBLIC_RATE
    # the scan page is not limited by the API's budget
    _, code = next(iter((await district_codes(conn)).items()))
    assert (await client.get(f"/s/{code}")).status_code == 200


async def district_codes(conn: asyncpg.Connection) -> dict[str, str]:
    return {r["name"]: r["code"] for r in await conn.fetch("SELECT name, code FROM shop")}
