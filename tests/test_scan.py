"""One sticker, three views: a citizen, the shop's owner and an inspector over its area each
get their own view of `GET /s/{code}`, in HTML and JSON; bad and revoked codes say so."""

from __future__ import annotations

import datetime
import json
from typing import Any

import asyncpg
from litestar.testing import AsyncTestClient

from merchant_code import profiles
from merchant_code.codes import new_shop_code
from tests import factories
from tests import world as w

TODAY = datetime.date.today()
DAY = datetime.timedelta(days=1)
JSON = {"accept": "application/json"}


async def test_a_scan_shows_licence_states_latest_grade_and_rating(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    shop_id, code = await factories.shop(conn)
    await factories.licence(conn, shop_id, kind="business", valid_to=None)
    await factories.licence(conn, shop_id, kind="food_business", valid_to=TODAY + 10 * DAY)
    await factories.licence(conn, shop_id, kind="hygiene", valid_to=TODAY - DAY)
    await factories.inspection(conn, shop_id, on=TODAY - 400 * DAY, grade="C", result="fail")
    await factories.inspection(conn, shop_id, on=TODAY - 20 * DAY, grade="A")
    for rating in (5, 4):
        await factories.review(conn, shop_id, rating)
    await profiles.drain(conn)

    body = (await client.get(f"/s/{code}", headers=JSON)).json()

    states = {lic["kind"]: lic["state"] for lic in body["licences"]}
    assert states == {"business": "valid", "food_business": "expiring", "hygiene": "expired"}
    assert (body["grade"], body["grade_date"]) == ("A", str(TODAY - 20 * DAY))
    assert body["inspections"][0]["inspected_on"] == str(TODAY - 20 * DAY)
    assert (body["rating"], body["review_count"]) == (4.5, 2)
    page = (await client.get(f"/s/{code}")).text
    assert "优秀" in page and "未发现问题或只有个别轻微问题" in page  # the grade in plain words


async def test_a_change_reaches_the_citizen_page_once_the_profile_is_rebuilt(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    shop_id, code = await factories.shop(conn)
    before = await client.get(f"/s/{code}", headers=JSON)
    assert before.json()["grade"] is None
    await factories.inspection(conn, shop_id, on=TODAY, grade="B")
    cached = await client.get(f"/s/{code}", headers=JSON)
    assert cached.json()["grade"] is None  # the profile is rebuilt off the writer's path
    await profiles.drain(conn)
    after = await client.get(f"/s/{code}", headers=JSON)
    assert after.json()["grade"] == "B"
    assert after.headers["etag"] != before.headers["etag"]
    again = await client.get(f"/s/{code}", headers={**JSON, "if-none-match": after.headers["etag"]})
    assert again.status_code == 304


async def test_the_page_carries_json_ld_and_is_chinese_by_default(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    shop_id, code = await factories.shop(conn, name="老王面馆")
    await factories.review(conn, shop_id, 5)
    await profiles.drain(conn)
    zh = await client.get(f"/s/{code}")
    assert zh.status_code == 200 and zh.headers["content-type"] == "text/html; charset=utf-8"
    assert 'lang="zh-CN"' in zh.text and "证照" in zh.text
    ld = json.loads(zh.text.split('<script type="application/ld+json">')[1].split("</script>")[0])
    assert (ld["@type"], ld["name"], ld["aggregateRating"]["ratingValue"]) == (
        "LocalBusiness",
        "老王面馆",
        5.0,
    )
    en = await client.get(f"/s/{code}", headers={"accept-language": "en-GB,en;q=0.9"})
    assert 'lang="en"' in en.text and "Licences" in en.text
    assert 'lang="en"' in (await client.get(f"/s/{code}?lang=en")).text


async def test_closed_and_suspended_shops_say_so(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    _, closed = await factories.shop(conn, status="closed")
    _, suspended = await factories.shop(conn, status="suspended")
    assert "该商户已歇业" in (await client.get(f"/s/{closed}")).text
    assert "suspended by the regulator" in (await client.get(f"/s/{suspended}?lang=en")).text
    assert (await client.get(f"/s/{closed}", headers=JSON)).json()["status"] == "closed"


async def test_a_shop_name_cannot_inject_markup(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    _, code = await factories.shop(conn, name="<script>alert(1)</script>面馆")
    page = (await client.get(f"/s/{code}")).text
    assert "<script>alert(1)" not in page and "&lt;script&gt;" in page
    assert "</script>面馆" not in page.split('application/ld+json">')[1].split("</script>")[0]


async def test_malformed_unknown_and_revoked_codes(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    _, code = await factories.shop(conn)
    wrong_check = code[:-1] + ("0" if code[-1] != "0" else "1")
    malformed = await client.get(f"/s/{wrong_check}", headers=JSON)
    assert malformed.status_code == 422 and malformed.json()["errors"][0]["field"] == "code"
    page = await client.get(f"/s/{wrong_check}")
    assert page.status_code == 422 and "该二维码无效" in page.text and "12315" in page.text

    unknown = new_shop_code()
    assert (await client.get(f"/s/{unknown}", headers=JSON)).status_code == 404
    assert "No registered shop has this code" in (await client.get(f"/s/{unknown}?lang=en")).text

    await conn.execute(
        "INSERT INTO qr_revocation (code, reason) VALUES ($1, 'sticker reported stolen')", code
    )
    await profiles.drain(conn)
    revoked = await client.get(f"/s/{code}")
    assert revoked.status_code == 410 and "已注销" in revoked.text


async def test_each_person_gets_their_own_view(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)
    await profiles.drain(conn)

    async def view(role: str, accept: str = "application/json", query: str = "") -> Any:
        response = await client.get(f"/s/{world.shop_a}{query}", headers=world.headers(role, accept=accept))
        assert response.status_code == 200
        return response.json() if accept == "application/json" else response.text

    citizen = await view("anonymous")
    assert "owner_name" not in citizen and "risk_score" not in citizen
    owner = await view("merchant_a")
    assert owner["owner_name"] == w.PII["owner_name"] and "risk_score" not in owner
    assert "owner_name" not in await view("merchant_b")  # another shop's owner is a citizen here
    inspector = await view("inspector_in")
    assert inspector["owner_name"] == "王*" and inspector["pii_masked"] and "risk_score" in inspector
    assert "owner_name" not in await view("inspector_out")
    assert (await view("pii_inspector"))["owner_name"] == w.PII["owner_name"]

    # the switch to preview the citizen view, in HTML
    full_page = await view("inspector_in", "text/html")
    assert "风险评分" in full_page and "以市民视角预览" in full_page
    preview = await view("inspector_in", "text/html", "?view=citizen")
    assert "风险评分" not in preview and "王*" not in preview and "返回完整视图" in preview
    owner_page = await view("merchant_a", "text/html")
    assert w.PII["staff_name"] in owner_page and w.PII["staff_cert"] in owner_page


async def test_the_hot_path_answers_exactly_as_the_handler_does(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    # an anonymous scan is answered by the middleware's hot path; `view=citizen` sends the same
    # request to the handler instead, which for an anonymous caller gives the citizen view anyway
    shop_id, code = await factories.shop(conn, name="老王面馆")
    _, closed = await factories.shop(conn, status="closed")
    await factories.inspection(conn, shop_id, on=TODAY, grade="A")
    _, revoked = await factories.shop(conn)
    await conn.execute("INSERT INTO qr_revocation (code, reason) VALUES ($1, 'stolen')", revoked)
    await profiles.drain(conn)
    etag = (await client.get(f"/s/{code}")).headers["etag"]
    asks: list[tuple[str, str, dict[str, str]]] = [
        (code, "", {}),
        (code, "lang=en", {}),
        (code, "lang=zh", {"accept-language": "en-GB,en;q=0.9"}),
        (code, "", {"accept-language": "en-US"}),
        (code, "", JSON),
        (code, "q=K1.c2lnbmF0dXJl", {}),  # as a sticker sends it
        (code, "utm_source=poster&lang=en", {}),  # a campaign's tag is ignored
        (code, "", {"if-none-match": etag}),
        (code, "", {"if-none-match": 'W/"0-zh"'}),
        (closed, "", {}),
        (revoked, "", {}),
        (revoked, "", JSON),
        (new_shop_code(), "", {}),
        (code[:-1] + ("0" if code[-1] != "0" else "1"), "", JSON),
    ]
    scan_route = next(r for r in client.app.routes if r.path == "/s/{code:str}")
    handler_opt = scan_route.route_handlers[0].opt
    hot_path, answered = handler_opt["hot_path"], []

    async def counted(*args: Any) -> bool:
        answered.append(await hot_path(*args))
        return answered[-1]

    handler_opt["hot_path"] = counted
    seen: set[int] = set()
    for scanned, query, headers in asks:
        hot = await client.get(f"/s/{scanned}?{query}", headers=headers)
        handler = await client.get(f"/s/{scanned}?{query}&view=citizen", headers=headers)
        assert (hot.status_code, hot.content) == (handler.status_code, handler.content), (query, headers)
        drop = {"x-request-id", "date"}
        assert {k: v for k, v in hot.headers.items() if k not in drop} == {
            k: v for k, v in handler.headers.items() if k not in drop
        }, (query, headers)
        seen.add(hot.status_code)
    assert seen == {200, 304, 404, 410, 422}
    # the hot path answered with the stored answers (the closed shop's page too) and declined the
    # revoked, unknown and malformed codes and every `view=` twin
    assert answered == [True, False] * 11 + [False, False] * 3
    # the handler's to refuse or answer
    for odd, status in (("lang=fr", 400), ("lang=en&lang=zh", 200), ("view=full", 400)):
        assert (await client.get(f"/s/{code}?{odd}")).status_code == status, odd
        assert answered[-1] is False
