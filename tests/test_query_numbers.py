"""A position a client sends (the public search, the inspectors' due list, the account page and
Open311's requests) is refused by validation when PostgreSQL could not compute with it: a tiny
subnormal such as -5e-324 underflows in radians(), and any value nearer 0 than 1e-7 degrees (a
centimetre) does so against a shop at 0 (a feed's "no position"). Never a 500."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from merchant_code.routes import open311
from tests import world as w

TINY = ["-5e-324", "5e-324", "1e-200", "-4.9e-8"]


async def placed(conn: asyncpg.Connection, client: AsyncTestClient[Any]) -> w.World:
    world = await w.build(conn, client)
    await conn.execute("UPDATE shop SET lat = 31.2, lon = 121.4 WHERE code = $1", world.shop_a)
    await conn.execute("UPDATE shop SET lat = 0, lon = 0 WHERE code = $1", world.shop_b)  # null island
    return world


def fields_of(response: Any) -> list[str]:
    """The fields a problem document names (none for any other answer)."""
    if response.headers.get("content-type") != "application/problem+json":
        return []
    return [e["field"] for e in response.json().get("errors") or []]


@pytest.mark.parametrize("tiny", TINY)
async def test_a_coordinate_nearer_0_than_a_centimetre_is_refused_naming_it(
    client: AsyncTestClient[Any], conn: asyncpg.Connection, tiny: str
) -> None:
    world = await placed(conn, client)
    staff = world.headers("manager")
    answers = []
    for url, headers in [
        (f"/api/v1/shops?lat={tiny}&lon=0", {}),
        (f"/api/v1/shops?lat=0&lon={tiny}&radius_m=20000", {}),
        (f"/api/v1/inspect/due?lat={tiny}&lon=121.4", staff),
        (f"/api/v1/inspect/due?lat=0&lon={tiny}", staff),
    ]:
        response = await client.get(url, headers=headers)
        answers.append((url, response.status_code, fields_of(response)))
    assert answers == [
        (answers[0][0], 422, ["lat"]),
        (answers[1][0], 422, ["lon"]),
        (answers[2][0], 422, ["lat"]),
        (answers[3][0], 422, ["lon"]),
    ]
    page = await client.get(f"/me?lat={tiny}&lon=0", headers=staff)
    assert page.status_code == 422 and fields_of(page) == ["lat"]
    key = open311.new_key()
    await conn.execute(
        "INSERT INTO open311_key (name, key_hash) VALUES ('city-app', $1)", open311.hash_key(key)
    )
    filed = await client.post(
        "/open311/v2/requests.json",
        data={"api_key": key, "service_code": "hygiene", "description": "脏", "lat": "0", "long": tiny},
    )
    assert filed.status_code == 400, filed.text
    assert filed.json()[0]["description"].startswith("long:")


async def test_0_and_a_centimetre_from_it_are_positions(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await placed(conn, client)
    for lat in ("0", "-0.0", "1e-7", "-1.5e-7"):
        search = await client.get(f"/api/v1/shops?lat={lat}&lon=0&radius_m=10")
        assert search.status_code == 200, search.text
        assert [s["code"] for s in search.json()["items"]] == [world.shop_b]
    near = await client.get("/api/v1/shops?lat=31.2&lon=121.4")
    assert [s["code"] for s in near.json()["items"]] == [world.shop_a]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e999", "91", "NaN"])
async def test_a_latitude_that_is_not_a_finite_number_in_range_is_refused_naming_it(
    client: AsyncTestClient[Any], conn: asyncpg.Connection, value: str
) -> None:
    await placed(conn, client)
    response = await client.get(f"/api/v1/shops?lat={value}&lon=0")
    assert response.status_code == 400, response.text
    assert fields_of(response) == ["lat"]
