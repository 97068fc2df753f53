"""Webhook subscriptions: outside systems get the events they asked for, about the shops they
asked for, signed, once, through the policy outbox; never anyone's personal data."""

from __future__ import annotations

import datetime
import json
from typing import Any

import asyncpg
import msgspec
import pytest
from litestar.testing import AsyncTestClient

from merchant_code import cases, policies, profiles, webhooks
from merchant_code.settings import Settings
from tests import factories
from tests import world as w
from tests.webhook_receiver import Receiver


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # the receivers are on loopback: allowed here on purpose (the SSRF rule refuses them by default)
    return msgspec.structs.replace(settings, webhooks_allow_private=True)


async def deliver(conn: asyncpg.Connection, receiver: Receiver) -> None:
    await webhooks.dispatch(conn)
    await policies.deliver_channels(conn, "http://test")
    receiver.wait_idle()


async def test_events_reach_the_subscriptions_that_asked_for_them(
    client: AsyncTestClient[Any], conn: asyncpg.Connection, today: datetime.date
) -> None:
    world = await w.build(conn, client)
    manager = world.headers("manager")
    with Receiver() as area_hook, Receiver() as trade_hook:
        made = await client.post(
            "/api/v1/manage/webhooks",
            json={
                "name": "city-app",
                "url": area_hook.url,
                "area_code": "310199001",
                "events": ["grade_changed", "case_opened", "case_closed", "licence_expired"],
            },
            headers=manager,
        )
        assert made.status_code == 201, made.text
        area_hook.secret = made.json()["secret"]
        retail = await client.post(
            "/api/v1/manage/webhooks",
            json={
                "name": "retail-watch",
                "url": trade_hook.url,
                "area_code": "310199",
                "trade": "retail",
                "events": ["case_opened"],
            },
            headers=manager,
        )
        assert retail.status_code == 201

        # shop A (area 001, catering): a complaint, a closed case (the world's, opened before the
        # subscription: only its closing is news), a new grade, an expired licence (and its case)
        complaint = await client.post(
            f"/api/v1/shops/{world.shop_a}/complaints",
            json={"category": "price", "text": "价格与标价不符", "name": "陈晓明", "phone": "13611112222"},
        )
        assert complaint.status_code == 201
        # shop B (area 002): nothing for these subscribers
        await client.post(
            f"/api/v1/shops/{world.shop_b}/complaints", json={"category": "price", "text": "价格与标价不符"}
        )
        await factories.inspection(conn, world.shop_a_id, on=today, result="pass", grade="B")
        async with conn.transaction():
            await profiles.rebuild(conn, [world.shop_a_id])
        await factories.licence(conn, world.shop_a_id, valid_to=today - datetime.timedelta(days=2))
        await cases.intake(conn, today)
        await conn.execute(
            "UPDATE case_file SET status = 'closed', closed_at = now() WHERE public_id = 'CS-WORLD-00001'"
        )
        await deliver(conn, area_hook)
        trade_hook.wait_idle()

        bodies = [json.loads(r.body) for r in area_hook.requests()]
        events = sorted(b["event"] for b in bodies)
        assert events == ["case_closed", "case_opened", "case_opened", "grade_changed", "licence_expired"]
        assert {b["shop"]["code"] for b in bodies} == {world.shop_a}
        assert all(r.signature_ok for r in area_hook.requests())
        assert len({r.key for r in area_hook.requests()}) == len(bodies)
        grade = next(b for b in bodies if b["event"] == "grade_changed")
        assert grade["data"]["to"] == "B"
        raw = b"".join(r.body for r in area_hook.requests())
        for private in ("13611112222", "陈晓明", w.PII["owner_phone"].encode().decode(), w.PII["owner_name"]):
            assert private.encode() not in raw
        assert trade_hook.requests() == []  # no retail shop had a case

        # nothing twice: another round delivers nothing new
        before = len(area_hook.requests())
        await deliver(conn, area_hook)
        assert len(area_hook.requests()) == before

        # unsubscribed: no more
        assert (await client.delete("/api/v1/manage/webhooks/city-app", headers=manager)).status_code == 204
        await client.post(
            f"/api/v1/shops/{world.shop_a}/complaints", json={"category": "hygiene", "text": "门口很脏乱差"}
        )
        await deliver(conn, area_hook)
        assert len(area_hook.requests()) == before
        listed = (await client.get("/api/v1/manage/webhooks", headers=manager)).json()
        assert {s["name"]: s["enabled"] for s in listed} == {"city-app": False, "retail-watch": True}
        assert next(s for s in listed if s["name"] == "city-app")["delivered"] == 5


async def test_subscriptions_stay_inside_the_managers_area(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)
    await factories.account(conn, "manager2", "manager", area_code="310199002")
    token = await w.log_in(client, "manager2")
    other = {"authorization": f"Bearer {token}"}
    body = {"name": "x-app", "url": "https://hooks.example.cn/in", "events": ["case_opened"]}
    outside = await client.post(
        "/api/v1/manage/webhooks", json={**body, "area_code": "310199001"}, headers=other
    )
    assert outside.status_code == 422 and outside.json()["errors"][0]["field"] == "area_code"
    nowhere = await client.post("/api/v1/manage/webhooks", json=body, headers=other)
    assert nowhere.status_code == 422
    shop = await client.post(
        "/api/v1/manage/webhooks", json={**body, "shop_code": world.shop_a}, headers=other
    )
    assert shop.status_code == 404
    bad_event = await client.post(
        "/api/v1/manage/webhooks",
        json={**body, "area_code": "310199002", "events": ["everything"]},
        headers=other,
    )
    assert bad_event.status_code == 400
    ok = await client.post("/api/v1/manage/webhooks", json={**body, "area_code": "310199002"}, headers=other)
    assert ok.status_code == 201 and len(ok.json()["secret"]) >= 32
    again = await client.post(
        "/api/v1/manage/webhooks", json={**body, "area_code": "310199002"}, headers=other
    )
    assert again.status_code == 409
    # the district manager sees it; the other manager cannot remove the district's own
    assert [
        s["name"]
        for s in (await client.get("/api/v1/manage/webhooks", headers=world.headers("manager"))).json()
    ] == ["x-app"]
