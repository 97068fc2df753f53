"""The demo district is generated the same way every time for a given seed."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from merchant_code import db
from merchant_code.district import demo_logins, seed_district
from merchant_code.errors import Conflict
from merchant_code.settings import Settings

TODAY = datetime.date(2026, 11, 23)
TABLES = ["area", "shop", "licence", "inspection", "violation", "review", "sentiment_item", "honour", "staff"]


async def _fingerprint(conn: asyncpg.Connection) -> dict[str, str]:
    prints = {}
    for table in TABLES:
        # public ids are random uuids by design (never derived from anything guessable)
        prints[table] = await conn.fetchval(
            f"SELECT md5(coalesce(string_agg((to_jsonb(t) - 'public_id')::text, ',' ORDER BY id), ''))"
            f" FROM {table} t"
        )
    return prints


@pytest.fixture
async def second_conn(server_url: str, template_db: str) -> AsyncIterator[asyncpg.Connection]:
    from tests.conftest import _admin, with_database

    name = f"mc_seed_twin_{id(object())}"
    await _admin(server_url, f"CREATE DATABASE {name} TEMPLATE {template_db}")
    conn = await db.connect(with_database(server_url, name))
    yield conn
    await conn.close()
    await _admin(server_url, f"DROP DATABASE {name} WITH (FORCE)")


async def test_the_same_seed_gives_the_same_district_row_for_row(
    conn: asyncpg.Connection, second_conn: asyncpg.Connection
) -> None:
    first = await seed_district(conn, shops=300, seed=7, today=TODAY)
    second = await seed_district(second_conn, shops=300, seed=7, today=TODAY)
    assert first.shops == second.shops == 300
    assert await _fingerprint(conn) == await _fingerprint(second_conn)


async def test_another_seed_gives_another_district(
    conn: asyncpg.Connection, second_conn: asyncpg.Connection
) -> None:
    await seed_district(conn, shops=300, seed=7, today=TODAY)
    await seed_district(second_conn, shops=300, seed=8, today=TODAY)
    assert (await _fingerprint(conn))["shop"] != (await _fingerprint(second_conn))["shop"]


async def test_the_district_has_what_a_demo_needs(conn: asyncpg.Connection) -> None:
    summary = await seed_district(conn, shops=1000, seed=2026, today=TODAY)
    assert summary.shops == 1000 and summary.licences >= 1000 and summary.inspections > 0
    levels = dict(await conn.fetch("SELECT level, count(*) FROM area GROUP BY level"))
    assert levels["district"] == 1 and levels["subdistrict"] >= 2 and levels["grid"] >= levels["subdistrict"]
    trades = await conn.fetchval("SELECT count(DISTINCT trade) FROM shop")
    assert trades >= 7
    expiring = await conn.fetchval(
        "SELECT count(*) FROM licence WHERE status = 'active' AND valid_to BETWEEN $1 AND $1 + 30", TODAY
    )
    expired = await conn.fetchval("SELECT count(*) FROM licence WHERE valid_to < $1", TODAY)
    assert expiring > 0 and expired > 0
    grades = {r["grade"] for r in await conn.fetch("SELECT DISTINCT grade FROM inspection")}
    assert {"A", "B", "C"} <= grades
    assert await conn.fetchval("SELECT count(*) FROM violation") > 0
    assert await conn.fetchval("SELECT count(*) FROM shop WHERE name ~ '[\u4e00-\u9fff]'") == 1000


async def test_every_generated_code_and_uscc_validates(conn: asyncpg.Connection) -> None:
    from merchant_code.codes import parse_shop_code, parse_uscc

    await seed_district(conn, shops=500, seed=3, today=TODAY)
    for row in await conn.fetch("SELECT code, uscc FROM shop"):
        assert parse_shop_code(row["code"]) == row["code"]
        assert parse_uscc(row["uscc"]) == row["uscc"]


async def test_demo_logins_log_in_and_each_sees_what_its_role_should(
    conn: asyncpg.Connection, client: AsyncTestClient[Any], settings: Settings
) -> None:
    await seed_district(conn, shops=200, seed=settings.demo_seed, today=TODAY)
    logins = demo_logins(settings.demo_seed)
    assert {login.role for login in logins} == {"merchant", "inspector", "manager", "admin"}
    seen = {}
    for login in logins:
        stored = await conn.fetchval("SELECT password_hash FROM account WHERE login = $1", login.login)
        assert stored.startswith("$argon2id$")
        response = await client.post(
            "/api/v1/auth/login", json={"login": login.login, "password": login.password}
        )
        assert response.status_code == 200, login
        headers = {"authorization": f"Bearer {response.json()['token']}"}
        me = (await client.get("/api/v1/me", headers=headers)).json()
        assert me["role"] == login.role
        seen[login.role] = (me, headers)
    assert len(seen["merchant"][0]["shops"]) >= 1
    area_shops = (await client.get("/api/v1/inspect/shops", headers=seen["inspector"][1])).json()["items"]
    assert area_shops and all(
        s["area_code"].startswith(seen["inspector"][0]["area_code"]) for s in area_shops
    )
    staff = (await client.get("/api/v1/accounts", headers=seen["manager"][1])).json()["items"]
    assert {a["login"] for a in staff} == {"inspector", "manager"}


async def test_seeding_the_same_district_twice_is_refused(conn: asyncpg.Connection) -> None:
    await seed_district(conn, shops=100, seed=1, today=TODAY)
    with pytest.raises(Conflict):
        await seed_district(conn, shops=100, seed=1, today=TODAY)
