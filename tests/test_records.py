"""Merchant updates, inspections on patrol and citizen complaints: what each may do, and when
the citizen page shows it."""

from __future__ import annotations

import datetime
import struct
import zlib
from typing import Any

import asyncpg
from litestar.testing import AsyncTestClient

from merchant_code import profiles
from tests import factories
from tests import world as w
from tests.watermark import caught_up

DAY = datetime.timedelta(days=1)
JSON = {"accept": "application/json"}


def png(width: int = 2, height: int = 2) -> bytes:
    """A real, tiny PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


async def citizen(client: AsyncTestClient[Any], code: str) -> Any:
    """The citizen's view once the scan cache has seen every change committed so far (a changed
    profile reaches a worker within a watermark poll, not at once)."""
    await caught_up(client.app)
    return (await client.get(f"/s/{code}", headers=JSON)).json()


async def test_a_licence_shows_to_citizens_only_once_verified(
    client: AsyncTestClient[Any], conn: asyncpg.Connection, today: datetime.date
) -> None:
    world = await w.build(conn, client)
    form = {"kind": "food_business", "number": "JY13101990012345", "valid_from": str(today - DAY)}
    form["valid_to"] = str(today + 1000 * DAY)
    sent = await client.post(
        f"/api/v1/merchant/shops/{world.shop_a}/licences",
        data=form,
        files={"image": ("licence.png", png(), "image/png")},
        headers=world.headers("merchant_a"),
    )
    assert sent.status_code == 201, sent.text
    submission = sent.json()["id"]
    await profiles.drain(conn)
    assert (await citizen(client, world.shop_a))["licences"] == []  # pending: not yet a fact
    owner = (await client.get(f"/s/{world.shop_a}", headers=world.headers("merchant_a", **JSON))).json()
    mine = [s for s in owner["submissions"] if s["id"] == submission]
    assert [s["state"] for s in mine] == ["pending"] and mine[0]["has_image"]

    # only staff over the shop's area may decide; another area's inspector is told nothing
    decision = {"decision": "verify"}
    outside = await client.post(
        f"/api/v1/inspect/submissions/{submission}", json=decision, headers=world.headers("inspector_out")
    )
    assert outside.status_code == 404
    ok = await client.post(
        f"/api/v1/inspect/submissions/{submission}", json=decision, headers=world.headers("inspector_in")
    )
    assert ok.status_code == 200 and ok.json()["state"] == "verified"
    again = await client.post(
        f"/api/v1/inspect/submissions/{submission}", json=decision, headers=world.headers("inspector_in")
    )
    assert again.status_code == 409
    await profiles.drain(conn)
    licences = (await citizen(client, world.shop_a))["licences"]
    assert licences == [{"kind": "food_business", "state": "valid", "valid_to": str(today + 1000 * DAY)}]


async def test_a_rejected_submission_never_reaches_the_citizen_page(
    client: AsyncTestClient[Any], conn: asyncpg.Connection, today: datetime.date
) -> None:
    world = await w.build(conn, client)
    body = {"kind": "hygiene", "number": "WS2026001", "valid_from": str(today)}
    sent = await client.post(
        f"/api/v1/merchant/shops/{world.shop_a}/licences", json=body, headers=world.headers("merchant_a")
    )
    submission = sent.json()["id"]
    no_note = await client.post(
        f"/api/v1/inspect/submissions/{submission}",
        json={"decision": "reject"},
        headers=world.headers("manager"),
    )
    assert no_note.status_code == 422 and no_note.json()["errors"][0]["field"] == "note"
    rejected = await client.post(
        f"/api/v1/inspect/submissions/{submission}",
        json={"decision": "reject", "note": "证照编号与登记不符"},
        headers=world.headers("manager"),
    )
    assert rejected.json()["state"] == "rejected"
    await profiles.drain(conn)
    assert (await citizen(client, world.shop_a))["licences"] == []
    owner = (await client.get(f"/s/{world.shop_a}", headers=world.headers("merchant_a", **JSON))).json()
    assert (
        owner["submissions"][0]["state"] == "rejected"
        and owner["submissions"][0]["review_note"] == "证照编号与登记不符"
    )


async def test_images_are_checked_by_their_bytes_and_size(
    client: AsyncTestClient[Any], conn: asyncpg.Connection, today: datetime.date
) -> None:
    world = await w.build(conn, client)
    form = {"kind": "business", "number": "ABCD1234", "valid_from": str(today)}
    url = f"/api/v1/merchant/shops/{world.shop_a}/licences"
    fake = await client.post(
        url,
        data=form,
        files={"image": ("x.png", b"<svg onload=alert(1)>", "image/png")},
        headers=world.headers("merchant_a"),
    )
    assert fake.status_code == 422 and fake.json()["errors"][0]["field"] == "image"
    huge = png() + b"\x00" * (5 * 1024 * 1024)
    big = await client.post(
        url, data=form, files={"image": ("x.png", huge, "image/png")}, headers=world.headers("merchant_a")
    )
    assert big.status_code in (413, 422)
    bad_date = await client.post(
        url, data={**form, "valid_from": "yesterday"}, headers=world.headers("merchant_a")
    )
    assert bad_date.status_code == 422 and bad_date.json()["errors"][0]["field"] == "valid_from"
    assert await conn.fetchval("SELECT count(*) FROM licence WHERE number = 'ABCD1234'") == 0


async def test_staff_and_honours_wait_for_verification_too(
    client: AsyncTestClient[Any], conn: asyncpg.Connection, today: datetime.date
) -> None:
    world = await w.build(conn, client)
    person = {
        "name": "钱多多",
        "health_cert_number": "JK2026-0099",
        "health_cert_valid_to": str(today + 300 * DAY),
    }
    staff = await client.post(
        f"/api/v1/merchant/shops/{world.shop_a}/staff", json=person, headers=world.headers("merchant_a")
    )
    honour = {
        "title": "放心消费示范店",
        "issuer": "汇城区市场监督管理局",
        "awarded_on": str(today - 30 * DAY),
    }
    award = await client.post(
        f"/api/v1/merchant/shops/{world.shop_a}/honours", json=honour, headers=world.headers("merchant_a")
    )
    assert staff.status_code == award.status_code == 201
    await profiles.drain(conn)
    before = await citizen(client, world.shop_a)
    assert before["honours"] == [] and before["staff_certified"] == 1 and before["staff_count"] == 2
    for sid in (staff.json()["id"], award.json()["id"]):
        await client.post(
            f"/api/v1/inspect/submissions/{sid}",
            json={"decision": "verify"},
            headers=world.headers("inspector_in"),
        )
    await profiles.drain(conn)
    after = await citizen(client, world.shop_a)
    assert after["honours"][0]["title"] == "放心消费示范店" and after["staff_certified"] == 2
    assert "钱多多" not in str(after)  # a citizen sees counts, not people


async def test_an_inspection_on_patrol_changes_the_grade_and_the_merchant_replies_once(
    client: AsyncTestClient[Any], conn: asyncpg.Connection, today: datetime.date
) -> None:
    world = await w.build(conn, client)
    report = {"kind": "routine", "result": "rectify", "grade": "B", "violations": ["V05", "V08"]}
    report["rectify_due"] = str(today + 14 * DAY)
    filed = await client.post(
        f"/api/v1/inspect/shops/{world.shop_a}/inspections",
        json=report,
        headers=world.headers("inspector_in"),
    )
    assert filed.status_code == 201, filed.text
    assert filed.json()["violations"] == 2
    await profiles.drain(conn)
    seen = await citizen(client, world.shop_a)
    assert seen["grade"] == "B" and seen["inspections"][0]["result"] == "rectify"
    assert [v["code"] for v in seen["inspections"][0]["violations"]] == ["V05", "V08"]

    inspection = filed.json()["id"]
    reply = {"reply": "已更换消毒柜，已整改完毕。"}
    other = await client.post(
        f"/api/v1/merchant/inspections/{inspection}/reply", json=reply, headers=world.headers("merchant_b")
    )
    assert other.status_code == 404
    first = await client.post(
        f"/api/v1/merchant/inspections/{inspection}/reply", json=reply, headers=world.headers("merchant_a")
    )
    assert first.status_code == 200
    second = await client.post(
        f"/api/v1/merchant/inspections/{inspection}/reply", json=reply, headers=world.headers("merchant_a")
    )
    assert second.status_code == 409
    await profiles.drain(conn)
    assert (await citizen(client, world.shop_a))["inspections"][0]["merchant_reply"] == reply["reply"]


async def test_an_inspection_report_is_checked(
    client: AsyncTestClient[Any], conn: asyncpg.Connection, today: datetime.date
) -> None:
    world = await w.build(conn, client)
    url = f"/api/v1/inspect/shops/{world.shop_a}/inspections"

    async def field(body: dict[str, Any], role: str = "inspector_in") -> str:
        response = await client.post(url, json=body, headers=world.headers(role))
        assert response.status_code == 422, response.text
        return str(response.json()["errors"][0]["field"])

    assert await field({"kind": "routine", "result": "rectify"}) == "rectify_due"
    assert await field({"kind": "routine", "result": "pass", "violations": ["V99"]}) == "violations"
    assert (
        await field({"kind": "routine", "result": "pass", "rectify_due": str(today - DAY)}) == "rectify_due"
    )
    assert await field({"kind": "visit", "result": "pass"}) == "kind"
    outside = await client.post(
        url, json={"kind": "routine", "result": "pass"}, headers=world.headers("inspector_out")
    )
    assert outside.status_code == 404
    _, retail = await factories.shop(conn, trade="retail")
    graded = await client.post(
        f"/api/v1/inspect/shops/{retail}/inspections",
        json={"kind": "routine", "result": "pass", "grade": "A"},
        headers=world.headers("manager"),
    )
    assert graded.status_code == 422 and graded.json()["errors"][0]["field"] == "grade"


async def test_the_due_list_puts_the_riskiest_first_and_the_nearest_within_a_band(
    client: AsyncTestClient[Any], conn: asyncpg.Connection, today: datetime.date
) -> None:
    world = await w.build(conn, client)
    await conn.execute("UPDATE shop SET lat = 31.19, lon = 121.44 WHERE code = $1", world.shop_a)
    risky_id, risky = await factories.shop(conn, name="高风险店")
    await factories.move_shop(
        conn, risky_id, await conn.fetchval("SELECT id FROM area WHERE code = '310199001'")
    )
    await factories.licence(conn, risky_id, kind="food_business", valid_to=today - DAY)
    await factories.inspection(conn, risky_id, on=today - 30 * DAY, result="fail", grade="C")
    await profiles.drain(conn)
    due = (await client.get("/api/v1/inspect/due", headers=world.headers("inspector_in"))).json()
    assert [d["code"] for d in due] == [risky, world.shop_a]  # shop B is in another area
    assert due[0]["risk_score"] > due[1]["risk_score"] and due[0]["risk_reasons"]
    near = (
        await client.get("/api/v1/inspect/due?lat=31.19&lon=121.44", headers=world.headers("inspector_in"))
    ).json()
    assert near[1]["distance_m"] == 0
    half = await client.get("/api/v1/inspect/due?lat=31.19", headers=world.headers("inspector_in"))
    assert half.status_code == 422 and half.json()["errors"][0]["field"] == "lon"


async def test_a_citizen_complains_anonymously_and_gets_a_tracking_number(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    _, code = await factories.shop(conn)
    body = {"category": "food_safety", "text": "吃完以后肚子疼，厨房看着不干净。"}
    filed = await client.post(f"/api/v1/shops/{code}/complaints", json=body)
    assert filed.status_code == 201
    number = filed.json()["tracking_number"]
    assert number.startswith("TS-") and len(number) == 14
    case = await conn.fetchrow(
        "SELECT source, category, status, reporter_phone FROM case_file WHERE tracking_number = $1", number
    )
    assert case is not None and tuple(case) == ("complaint", "food_safety", "open", None)
    tracked = (await client.get(f"/track/{number.lower()}", headers=JSON)).json()
    assert (tracked["status"], tracked["tracking_number"]) == ("open", number)
    assert "reporter" not in str(tracked)
    page = await client.post(
        f"/s/{code}/complaint",
        data={"category": "hygiene", "text": "门口垃圾堆放"},
        files={"photo": ("p.png", png(), "image/png")},
    )
    assert page.status_code == 201 and "TS-" in page.text
    await profiles.drain(conn)
    assert (await client.get(f"/s/{code}", headers=JSON)).json()["open_cases"] == 2
    for _ in range(3):
        assert (await client.post(f"/api/v1/shops/{code}/complaints", json=body)).status_code == 201
    limited = await client.post(f"/api/v1/shops/{code}/complaints", json=body)
    assert limited.status_code == 429  # five an hour from one address


async def test_an_inspectors_page_lists_the_due_shops_and_what_waits_for_verification(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)
    await conn.execute("UPDATE shop SET lat = 31.19, lon = 121.44 WHERE code = $1", world.shop_a)
    await profiles.drain(conn)
    page = (await client.get("/me", headers=world.headers("inspector_in"))).text
    assert "待检查（按风险）" in page and f"/s/{world.shop_a}" in page and f"/s/{world.shop_b}" not in page
    assert "WS20260001" in page  # the world's pending licence of shop A
    near = (await client.get("/me?lat=31.19&lon=121.44&lang=en", headers=world.headers("inspector_in"))).text
    assert "Due for inspection" in near and " 0 m" in near
    owner = (await client.get("/me", headers=world.headers("merchant_a"))).text
    assert "待检查" not in owner
