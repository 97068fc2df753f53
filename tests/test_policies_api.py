"""Policy pushes over HTTP: a manager's API answers, its errors naming the field, and a merchant's
inbox with its read receipts moving the reach counts."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import asyncpg
from litestar.testing import AsyncTestClient

from merchant_code import policies
from tests import world as w

TZ = "Asia/Shanghai"


def policy(**extra: Any) -> dict[str, Any]:
    return {"title": "夏季食品安全", "body_md": "请做好**防暑降温**。", "area_codes": ["310199001"], **extra}


async def test_a_manager_schedules_a_policy_and_sees_its_reach_move_as_it_is_read(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)
    manager = world.headers("manager")
    preview = await client.post(
        "/api/v1/manage/audience", json={"area_codes": ["310199001"], "trades": ["catering"]}, headers=manager
    )
    assert preview.status_code == 200 and preview.json() == {"shops": 1}
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=1)
    created = await client.post(
        "/api/v1/manage/policies", json=policy(trades=["catering"], send_at=soon.isoformat()), headers=manager
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["status"] == "scheduled" and body["reach"]["targeted"] == 0
    # not yet its time: nothing goes out
    assert await policies.send_due(conn, TZ) == 0
    # it can still be changed
    edited = await client.put(
        f"/api/v1/manage/policies/{body['id']}",
        json=policy(title="夏季食品安全（修订）", trades=["catering"], send_at=soon.isoformat()),
        headers=manager,
    )
    assert edited.status_code == 200 and edited.json()["title"] == "夏季食品安全（修订）"
    # that minute
    assert await policies.send_due(conn, TZ, now=soon + datetime.timedelta(seconds=1)) == 1
    await policies.deliver_inbox(conn)
    merchant = world.headers("merchant_a")
    inbox = (await client.get("/api/v1/merchant/inbox", headers=merchant)).json()
    assert inbox["unread"] == 2  # the world's own policy and this one
    item = next(i for i in inbox["items"] if i["policy_id"] == body["id"])
    assert "<strong>防暑降温</strong>" in item["body_html"] and item["read_at"] is None
    reach = (await client.get(f"/api/v1/manage/policies/{body['id']}", headers=manager)).json()["reach"]
    assert (reach["targeted"], reach["delivered"], reach["read"]) == (1, 1, 0)
    unread_csv = await client.get(f"/api/v1/manage/policies/{body['id']}/unread.csv?days=0", headers=manager)
    assert unread_csv.headers["content-type"].startswith("text/csv")
    assert "老王面馆" in unread_csv.text and "王伟" not in unread_csv.text  # the shop, not its owner
    opened = await client.get(f"/api/v1/merchant/inbox/{item['id']}", headers=merchant)
    assert opened.status_code == 200 and opened.json()["read_at"] is not None
    reach = (await client.get(f"/api/v1/manage/policies/{body['id']}", headers=manager)).json()["reach"]
    assert reach["read"] == 1
    assert (await client.get("/api/v1/merchant/inbox", headers=merchant)).json()["unread"] == 1
    unread_csv = await client.get(f"/api/v1/manage/policies/{body['id']}/unread.csv?days=0", headers=manager)
    assert "老王面馆" not in unread_csv.text
    # once sent: no edit, no cancel; a correction reaches the same shops
    again = await client.put(f"/api/v1/manage/policies/{body['id']}", json=policy(), headers=manager)
    assert again.status_code == 409
    correction = await client.post(
        f"/api/v1/manage/policies/{body['id']}/corrections",
        json={"title": "更正", "body_md": "日期有误"},
        headers=manager,
    )
    assert correction.status_code == 201 and correction.json()["corrects"] == body["id"]
    await policies.send_due(conn, TZ)
    await policies.deliver_inbox(conn)
    items = (await client.get("/api/v1/merchant/inbox?unread=true", headers=merchant)).json()["items"]
    assert [i["kind"] for i in items][:1] == ["correction"]
    # the other merchant, in another area, got none of it
    other = (await client.get("/api/v1/merchant/inbox", headers=world.headers("merchant_b"))).json()
    assert other == {"unread": 0, "items": [], "next": None}
    assert (
        await client.get(f"/api/v1/merchant/inbox/{item['id']}", headers=world.headers("merchant_b"))
    ).status_code == 404


async def test_bad_policies_are_refused_naming_the_field(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)
    manager = world.headers("manager")
    past = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)).isoformat()
    cases = [
        (policy(send_at=past), "send_at"),
        (policy(send_at="2030-01-01T09:00:00"), "send_at"),  # no offset: which 09:00?
        (policy(cron="every day"), "cron"),
        (policy(cron="0 9 * * *", send_at="2030-01-01T09:00:00+08:00"), "cron"),
        (policy(area_codes=["999999"]), "area_codes"),
        (policy(trades=["catering", "spaceships"]), "trades"),
        (policy(title=""), "title"),
        (policy(filters={"grades": ["D"]}), "filters.grades"),
        (policy(links=[{"title": "x", "url": "javascript:alert(1)"}]), "links"),
    ]
    for body, field in cases:
        response = await client.post("/api/v1/manage/policies", json=body, headers=manager)
        assert response.status_code in (400, 422), (body, response.text)
        fields = [e.get("field", e.get("key", "")) for e in response.json().get("errors", [])]
        assert any(f.startswith(field) for f in fields), (body, response.text)
    # an inspector may not push; a manager of another area may not target this one
    inspector = await client.post(
        "/api/v1/manage/policies", json=policy(), headers=world.headers("inspector_in")
    )
    assert inspector.status_code == 403
    assert await conn.fetchval("SELECT count(*) FROM policy WHERE reminder IS NULL") == 1  # the world's own


async def test_inbox_filters_trade_wide_and_shop_specific(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)
    await conn.execute(
        "INSERT INTO licence (shop_id, source, external_id, kind, number, valid_to, status)"
        " VALUES ($1, 'test', 'exp-1', 'food_business', 'JY1', current_date + 5, 'active')",
        world.shop_a_id,
    )
    await policies.remind(conn, datetime.date.today())
    await policies.deliver_inbox(conn)
    merchant = world.headers("merchant_a")
    shop = (await client.get("/api/v1/merchant/inbox?scope=shop&lang=en", headers=merchant)).json()["items"]
    trade = (await client.get("/api/v1/merchant/inbox?scope=trade", headers=merchant)).json()["items"]
    assert [i["kind"] for i in shop] == ["reminder"] and "JY1" in shop[0]["body_html"]
    assert "7 days" in shop[0]["title"]
    assert [i["title"] for i in trade] == ["夏季食品安全"]


async def test_inbox_items_and_pages_are_named_by_public_ids_and_row_numbers_open_nothing(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)
    await conn.execute(
        "INSERT INTO delivery (policy_id, shop_id, occurrence, status, delivered_at)"
        " SELECT p.id, $1, now() - make_interval(hours => n), 'delivered', now() - make_interval(hours => n)"
        " FROM policy p, generate_series(1, 2) n WHERE p.public_id = $2::uuid",
        world.shop_a_id,
        world.policy,
    )
    merchant = world.headers("merchant_a")
    pages, before = [], ""
    while True:
        page = (await client.get(f"/api/v1/merchant/inbox?limit=2{before}", headers=merchant)).json()
        pages.append([i["id"] for i in page["items"]])
        if page["next"] is None:
            break
        before = f"&before={page['next']}"
    assert [len(p) for p in pages] == [2, 1]
    ids = [i for p in pages for i in p]
    assert world.inbox_a in ids and len(set(ids)) == 3
    assert not any(i.isdigit() for i in ids)
    # the row numbers behind them (and their neighbours) open nothing, the same 404 as a made-up id
    rows = await conn.fetch("SELECT id FROM delivery WHERE shop_id = $1 ORDER BY id", world.shop_a_id)
    numbers = {r["id"] for r in rows} | {rows[0]["id"] - 1, rows[-1]["id"] + 1}
    for number in numbers:
        for path in (f"/api/v1/merchant/inbox/{number}", f"/inbox/{number}"):
            answer = await client.get(path, headers=merchant, follow_redirects=False)
            assert answer.status_code == 404, (path, answer.status_code)
    made_up = await client.get(f"/api/v1/merchant/inbox/{uuid.uuid4()}", headers=merchant)
    assert made_up.status_code == 404
    row_number = await client.get(f"/api/v1/merchant/inbox/{rows[0]['id']}", headers=merchant)
    assert made_up.json()["detail"] == row_number.json()["detail"]
    # another shop's item is not theirs either; a cursor that is no public id is a 400 naming it
    other = await client.get(f"/api/v1/merchant/inbox/{world.inbox_a}", headers=world.headers("merchant_b"))
    assert other.status_code == 404
    bad = await client.get("/api/v1/merchant/inbox?before=761", headers=merchant)
    assert bad.status_code == 400 and [e["field"] for e in bad.json()["errors"]] == ["before"]
