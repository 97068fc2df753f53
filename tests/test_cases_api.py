"""Cases over HTTP: a citizen's complaint followed to its close, and what each person may see."""

from __future__ import annotations

from typing import Any

import asyncpg
from litestar.testing import AsyncTestClient

from tests import world as w

REPORTER_1 = {"name": "陈晓明", "phone": "13611112222", "email": "chen@example.cn"}
REPORTER_2 = {"name": "林芳", "phone": "13933334444", "email": "lin@example.cn"}
JSON = {"accept": "application/json"}


async def complain(client: AsyncTestClient[Any], code: str, text: str, who: dict[str, str]) -> dict[str, Any]:
    response = await client.post(
        f"/api/v1/shops/{code}/complaints", json={"category": "food_safety", "text": text, **who}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def case_of(conn: asyncpg.Connection, tracking_number: str) -> str:
    """The case's own number, which staff and the shop use (a reporter is never told it)."""
    number: str = await conn.fetchval(
        "SELECT public_id FROM case_file WHERE tracking_number = $1", tracking_number
    )
    return number


async def test_a_complaint_followed_from_the_scan_page_to_its_close(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)
    await conn.execute("UPDATE account SET display_name = '周检查员' WHERE login = 'inspector_in'")
    first = await complain(client, world.shop_a, "吃了以后肚子疼", REPORTER_1)
    second = await complain(client, world.shop_a, "同样的问题", REPORTER_2)
    assert not first["joined"] and second["joined"]
    number = first["tracking_number"]
    tracked = (await client.get(f"/track/{number}", headers=JSON)).json()
    assert tracked["status"] == "open" and tracked["category"] == "food_safety"

    inspector = world.headers("inspector_in")
    mine = (await client.get("/api/v1/cases?status=open", headers=inspector)).json()
    case_number = await case_of(conn, number)
    assert case_number in [c["public_id"] for c in mine]
    case = (await client.get(f"/api/v1/cases/{case_number}", headers=inspector)).json()
    assert case["department"] == "food_safety" and case["reported_count"] == 2
    assert case["reporter_phone"] == REPORTER_1["phone"]  # staff may call back
    # closing it now is refused; so is a merchant trying to
    refused = await client.post(
        f"/api/v1/cases/{case_number}/transitions", json={"action": "close"}, headers=inspector
    )
    assert refused.status_code == 409
    merchant = await client.post(
        f"/api/v1/cases/{case_number}/transitions",
        json={"action": "close"},
        headers=world.headers("merchant_a"),
    )
    assert merchant.status_code == 403
    for change in (
        {"action": "assign"},
        {"action": "start"},
        {"action": "resolve", "note": "已现场检查，责令整改并对食材留样", "public": True},
        {"action": "close"},
    ):
        moved = await client.post(f"/api/v1/cases/{case_number}/transitions", json=change, headers=inspector)
        assert moved.status_code == 200, (change, moved.text)
    for n in (number, second["tracking_number"]):
        seen = (await client.get(f"/track/{n}", headers=JSON)).json()
        assert seen["status"] == "closed"
        assert any(e["note"] == "已现场检查，责令整改并对食材留样" for e in seen["events"])
    page = await client.get(f"/track/{number}")
    assert page.status_code == 200 and "已关闭" in page.text and "已现场检查" in page.text


async def test_reporters_and_staff_stay_private(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)
    await conn.execute("UPDATE account SET display_name = '周检查员' WHERE login = 'inspector_in'")
    first = await complain(client, world.shop_a, "后厨有老鼠出没", REPORTER_1)
    second = await complain(client, world.shop_a, "在后厨看到了老鼠", REPORTER_2)
    number = first["tracking_number"]
    case_number = await case_of(conn, number)
    inspector = world.headers("inspector_in")
    await client.post(
        f"/api/v1/cases/{case_number}/transitions", json={"action": "assign"}, headers=inspector
    )
    await client.post(
        f"/api/v1/cases/{case_number}/transitions",
        json={"action": "note", "note": "已约谈商户", "public": True},
        headers=inspector,
    )
    private = [*REPORTER_1.values(), *REPORTER_2.values(), "inspector_in", "周检查员"]
    views = [
        ("anonymous", f"/track/{number}"),
        ("anonymous", f"/track/{second['tracking_number']}"),
        ("merchant_a", "/api/v1/merchant/cases"),
        ("merchant_a", "/merchant/cases"),
    ]
    for role, url in views:
        for accept in ("application/json", "text/html"):
            body = (await client.get(url, headers=world.headers(role, accept=accept))).text
            assert not [p for p in private if p in body], (role, url, accept)
    # the test can fail: staff do see the first reporter and who handles it
    staff_view = (await client.get(f"/api/v1/cases/{case_number}", headers=inspector)).text
    assert REPORTER_1["phone"] in staff_view and "周检查员" in staff_view
    # another shop's owner does not see the case at all
    other = await client.get("/api/v1/merchant/cases", headers=world.headers("merchant_b"))
    assert case_number not in other.text


async def test_the_owner_replies_with_evidence_and_staff_see_it(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    from tests.test_records import png

    world = await w.build(conn, client)
    first = await complain(client, world.shop_a, "店内卫生情况很差", REPORTER_1)
    number = await case_of(conn, first["tracking_number"])
    owner = world.headers("merchant_a")
    cases = (await client.get("/api/v1/merchant/cases", headers=owner)).json()
    assert number in [c["public_id"] for c in cases] and all(c["assignee"] is None for c in cases)
    replied = await client.post(
        f"/api/v1/merchant/cases/{number}/replies",
        data={"note": "已全面清洁并灭鼠"},
        files={"photo": ("after.png", png(), "image/png")},
        headers=owner,
    )
    assert replied.status_code == 201, replied.text
    trail = (await client.get(f"/api/v1/cases/{number}", headers=world.headers("inspector_in"))).json()[
        "events"
    ]
    reply = next(e for e in trail if e["kind"] == "merchant_reply")
    assert reply["note"] == "已全面清洁并灭鼠" and reply["photo"] is not None
    # not a PDF disguised as a photo
    bad = await client.post(
        f"/api/v1/merchant/cases/{number}/replies",
        data={"note": "x"},
        files={"photo": ("x.png", b"%PDF-1.4 not an image", "image/png")},
        headers=owner,
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "photo"


async def test_managers_edit_the_routing_table_inside_their_area(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)
    manager = world.headers("manager")
    changed = await client.put(
        "/api/v1/manage/routes",
        json={"area_code": "310199001", "category": "food_safety", "department": "enforcement"},
        headers=manager,
    )
    assert changed.status_code == 200, changed.text
    first = await complain(client, world.shop_a, "买到的食材已经变质", REPORTER_1)
    case_number = await case_of(conn, first["tracking_number"])
    case = (await client.get(f"/api/v1/cases/{case_number}", headers=manager)).json()
    assert case["department"] == "enforcement"
    everywhere = await client.put(
        "/api/v1/manage/routes", json={"category": "price", "department": "enforcement"}, headers=manager
    )
    assert everywhere.status_code == 422 and everywhere.json()["errors"][0]["field"] == "area_code"
    unknown = await client.put(
        "/api/v1/manage/routes", json={"area_code": "310199001", "department": "nope"}, headers=manager
    )
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "department"
    # a row is named by its public id: its row number deletes nothing (the same 404 as no row)
    row = await conn.fetchval("SELECT id FROM case_route WHERE public_id = $1::uuid", changed.json()["id"])
    for number in (row, row - 1, row + 1):
        by_number = await client.delete(f"/api/v1/manage/routes/{number}", headers=manager)
        assert by_number.status_code == 404
    assert await conn.fetchval("SELECT count(*) FROM case_route WHERE id = $1", row) == 1
    deleted = await client.delete(f"/api/v1/manage/routes/{changed.json()['id']}", headers=manager)
    assert deleted.status_code == 204
    listed = (await client.get("/api/v1/manage/routes", headers=manager)).json()
    assert listed and not any(str(r["id"]).isdigit() for r in listed)
    assert changed.json()["id"] not in {r["id"] for r in listed}


async def test_tracking_numbers_are_the_reporters_alone_and_the_case_has_its_own(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)
    first = await complain(client, world.shop_a, "吃完以后上吐下泻", REPORTER_1)
    second = await complain(client, world.shop_a, "我家孩子吃完也拉肚子", REPORTER_2)
    numbers = [first["tracking_number"], second["tracking_number"]]
    inspector, owner = world.headers("inspector_in"), world.headers("merchant_a")
    listed = (await client.get("/api/v1/cases?category=food_safety", headers=inspector)).json()
    assert [c["reported_count"] for c in listed] == [2]
    case = listed[0]["public_id"]
    assert case not in numbers
    # a tracking number opens no case of the staff's or the owner's, however it is asked for
    for n in numbers:
        for headers, method, url, body in [
            (inspector, "GET", f"/api/v1/cases/{n}", None),
            (inspector, "GET", f"/cases/{n}", None),
            (inspector, "POST", f"/api/v1/cases/{n}/transitions", {"json": {"action": "assign"}}),
            (inspector, "POST", f"/cases/{n}/transitions", {"data": {"action": "assign"}}),
            (owner, "POST", f"/api/v1/merchant/cases/{n}/replies", {"json": {"note": "已整改"}}),
            (owner, "POST", f"/merchant/cases/{n}/replies", {"data": {"note": "已整改"}}),
        ]:
            answer = await client.request(
                method, url, headers=headers, follow_redirects=False, **(body or {})
            )
            assert answer.status_code == 404, (method, url, answer.status_code)
    # the case's own number works for them, and the owner's list names the case by it
    assert (await client.get(f"/api/v1/cases/{case}", headers=inspector)).status_code == 200
    shop_cases = (await client.get("/api/v1/merchant/cases", headers=owner)).json()
    assert [c["public_id"] for c in shop_cases if c["category"] == "food_safety"] == [case]
    replied = await client.post(
        f"/api/v1/merchant/cases/{case}/replies", json={"note": "已整改"}, headers=owner
    )
    assert replied.status_code == 201, replied.text
    for change in ({"action": "assign"}, {"action": "resolve", "note": "已责令停业整顿", "public": True}):
        moved = await client.post(f"/api/v1/cases/{case}/transitions", json=change, headers=inspector)
        assert moved.status_code == 200, moved.text
    # ... but it is not a tracking number: it opens no reporter's page and reopens nothing
    assert (await client.get(f"/track/{case}", headers=JSON)).status_code == 404
    assert (await client.post(f"/track/{case}/reopen", json={"reason": "x"})).status_code == 404
    # each reporter follows the case with their own number, and either may reopen it
    for n, joined in zip(numbers, (False, True), strict=True):
        seen = (await client.get(f"/track/{n}", headers=JSON)).json()
        assert (seen["tracking_number"], seen["joined"], seen["status"]) == (n, joined, "resolved")
        assert seen["can_reopen"] and any(e["note"] == "已责令停业整顿" for e in seen["events"])
        page = await client.get(f"/track/{n}")
        assert page.status_code == 200 and n in page.text and case not in page.text
    for n in reversed(numbers):
        reopened = await client.post(f"/track/{n}/reopen", json={"reason": "还是没有解决"})
        assert (reopened.status_code, reopened.json()) == (200, {"status": "assigned"}), reopened.text
        again = await client.post(
            f"/api/v1/cases/{case}/transitions",
            json={"action": "resolve", "note": "再次核查", "public": True},
            headers=inspector,
        )
        assert again.status_code == 200, again.text


async def test_staff_page_through_cases_by_case_number_never_by_row_number(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)
    for text, category in (("价格标签与收费不符", "price"), ("服务态度恶劣", "service")):
        complaint = {"category": category, "text": text}
        filed = await client.post(f"/api/v1/shops/{world.shop_a}/complaints", json=complaint)
        assert filed.status_code == 201, filed.text
    staff = world.headers("inspector_in")
    pages, before = [], ""
    while True:
        page = (await client.get(f"/api/v1/cases?limit=2{before}", headers=staff)).json()
        pages.append([c["public_id"] for c in page])
        if len(page) < 2:
            break
        before = f"&before={page[-1]['public_id']}"
    numbers = [n for p in pages for n in p]
    assert len(numbers) == len(set(numbers)) == 3 and world.case_a in numbers
    # a row number is no cursor: a 400 naming `before`, not a page that starts at that row
    row = await conn.fetchval("SELECT max(id) FROM case_file")
    refused = await client.get(f"/api/v1/cases?before={row}", headers=staff)
    assert refused.status_code == 400 and [e["field"] for e in refused.json()["errors"]] == ["before"]
