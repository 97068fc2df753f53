"""Open311 GeoReport v2 over HTTP: services, filing with an API key, reading requests with their
filters and statuses, Open311's error format everywhere, nothing personal in any answer, and the
CLI that issues the keys."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from litestar.testing import AsyncTestClient

from merchant_code import auth, cases
from merchant_code.codes import new_shop_code
from merchant_code.routes import open311
from tests import factories
from tests import world as w

WORLD_REQUEST = "SR-WORLD-00001"  # the public id of the world's complaint (tests/world.py)
API = "/open311/v2"
ROOT = Path(__file__).resolve().parent.parent
# shop A stands here; one degree of latitude is about 111.2 km
LAT, LON = 31.2000, 121.4000
METRE = 1 / 111_195
PUBLIC_CODES = ["food_safety", "hygiene", "licence", "other", "price", "service"]


async def make_key(conn: asyncpg.Connection, name: str = "city-app", *, disabled: bool = False) -> str:
    key = open311.new_key()
    await conn.execute(
        "INSERT INTO open311_key (name, key_hash, disabled_at) VALUES ($1, $2, CASE WHEN $3 THEN now() END)",
        name,
        open311.hash_key(key),
        disabled,
    )
    return key


async def place(conn: asyncpg.Connection, code: str, lat: float, lon: float, status: str = "active") -> None:
    await conn.execute(
        "UPDATE shop SET lat = $2, lon = $3, status = $4 WHERE code = $1", code, lat, lon, status
    )


def error(response: httpx.Response, status: int) -> str:
    """The Open311 error body, [{code, description}], with the status; returns the description."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body, list) and len(body) == 1, body
    assert set(body[0]) == {"code", "description"} and body[0]["code"] == status
    description: str = body[0]["description"]
    assert description
    return description


async def file(client: AsyncTestClient[Any], key: str, **fields: str) -> httpx.Response:
    return await client.post(f"{API}/requests.json", data={"api_key": key, **fields})


async def filed(client: AsyncTestClient[Any], key: str, **fields: str) -> dict[str, Any]:
    response = await file(client, key, **fields)
    assert response.status_code == 201, response.text
    body = response.json()
    assert isinstance(body, list) and len(body) == 1
    assert set(body[0]) == {"service_request_id", "service_notice", "account_id"}
    assert body[0]["account_id"] is None
    item: dict[str, Any] = body[0]
    return item


async def one(client: AsyncTestClient[Any], number: str, **params: str) -> dict[str, Any]:
    response = await client.get(f"{API}/requests/{number}.json", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body, list) and len(body) == 1
    item: dict[str, Any] = body[0]
    return item


async def ids(client: AsyncTestClient[Any], **params: str) -> list[str]:
    response = await client.get(f"{API}/requests.json", params=params)
    assert response.status_code == 200, response.text
    return [r["service_request_id"] for r in response.json()]


# --- services ----------------------------------------------------------------------------------


async def test_services_are_the_public_categories(client: AsyncTestClient[Any]) -> None:
    response = await client.get(f"{API}/services.json")
    assert response.status_code == 200, response.text
    services = response.json()
    assert [s["service_code"] for s in services] == PUBLIC_CODES  # no rectification, expiry, reviews
    for s in services:
        assert set(s) == {
            "service_code",
            "service_name",
            "description",
            "metadata",
            "type",
            "keywords",
            "group",
        }
        assert s["metadata"] is False and s["type"] == "realtime" and s["group"] == "投诉"
        assert s["service_code"] in s["keywords"]
    hygiene = next(s for s in services if s["service_code"] == "hygiene")
    assert hygiene["service_name"] == "环境卫生" and "环境卫生" in hygiene["description"]
    for english in (
        await client.get(f"{API}/services.json", params={"lang": "en"}),
        await client.get(f"{API}/services.json", headers={"accept-language": "en-GB,en;q=0.8"}),
    ):
        names = {s["service_code"]: s["service_name"] for s in english.json()}
        assert names["hygiene"] == "Hygiene" and names["food_safety"] == "Food safety"
        assert all(s["group"] == "Complaints" for s in english.json())
    # metadata is false for all: a definition has no attributes; an unknown code is a 404
    definition = await client.get(f"{API}/services/hygiene.json")
    assert definition.status_code == 200 and definition.json() == {
        "service_code": "hygiene",
        "attributes": [],
    }
    assert "rectification" in error(await client.get(f"{API}/services/rectification.json"), 404)
    error(await client.get(f"{API}/services/nothing.json"), 404)
    # XML too, the spec's baseline (tests/test_open311_xml.py reads it); no format is a 400
    for path in ("services.xml", "services/hygiene.xml"):
        response = await client.get(f"{API}/{path}")
        assert response.status_code == 200 and response.headers["content-type"] == "text/xml; charset=utf-8"
    assert ".xml or .json" in error(await client.get(f"{API}/services/hygiene"), 400)
    assert ".xml or .json" in error(await client.get(f"{API}/services/hygiene.yaml"), 400)


async def test_discovery_names_the_endpoint(client: AsyncTestClient[Any]) -> None:
    body = (await client.get(f"{API}/discovery.json")).json()
    assert {"changeset", "contact", "key_service", "endpoints"} <= set(body)
    [endpoint] = body["endpoints"]
    assert endpoint["specification"] == "http://wiki.open311.org/GeoReport_v2"
    assert endpoint["url"].endswith("/open311/v2") and endpoint["formats"] == ["text/xml", "application/json"]
    assert endpoint["type"] == "production"
    assert (await client.get(f"{API}/discovery.xml")).headers["content-type"] == "text/xml; charset=utf-8"
    error(await client.get(f"{API}/anything.json"), 404)


# --- filing ------------------------------------------------------------------------------------


async def test_filing_needs_a_valid_enabled_key(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)
    good = await make_key(conn)
    old = await make_key(conn, "old-app", disabled=True)
    fields = {"service_code": "price", "description": "标价与收费不符", "address_id": world.shop_a}
    assert "api_key" in error(await client.post(f"{API}/requests.json", data=fields), 403)
    assert "api_key" in error(await client.post(f"{API}/requests.json"), 403)
    error(await file(client, old, **fields), 403)
    error(await file(client, good + "x", **fields), 403)
    assert await conn.fetchval("SELECT count(*) FROM case_file WHERE via = 'open311'") == 0
    made = await filed(client, good, **fields)
    row = await conn.fetchrow(
        "SELECT shop_id, source, category, via, description FROM case_file WHERE request_id = $1",
        made["service_request_id"],
    )
    assert row is not None
    assert (row["shop_id"], row["source"], row["category"], row["via"]) == (
        world.shop_a_id,
        "complaint",
        "price",
        "open311",
    )
    assert row["description"] == "标价与收费不符"  # kept for staff
    # the filer is told where to follow it (the tracking number, the reporter's proof); the public
    # request id is another, so that listing requests reveals no tracking number
    assert "已受理" in made["service_notice"] and "/track/TS-" in made["service_notice"]
    assert (
        made["service_request_id"].startswith("SR-")
        and made["service_request_id"] not in made["service_notice"]
    )
    # the trail says a complaint came through which app, and nothing about who sent it
    detail = await conn.fetchval(
        "SELECT detail FROM audit_event WHERE action = 'complaint.file'"
        " AND object_id = (SELECT public_id FROM case_file WHERE request_id = $1)",
        made["service_request_id"],
    )
    assert detail["via"] == "open311" and detail["open311_key"] == "city-app" and detail["contact"] is False


async def test_each_missing_or_bad_field_is_a_400_naming_it(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)
    key = await make_key(conn)
    await place(conn, world.shop_a, LAT, LON)
    good = {"service_code": "price", "description": "标价与收费不符", "address_id": world.shop_a}

    async def bad(field: str, **change: str | None) -> str:
        fields = {k: v for k, v in {**good, **change}.items() if v is not None}
        description = error(await file(client, key, **fields), 400)
        assert description.startswith(f"{field}:"), description
        return description

    await bad("service_code", service_code=None)
    await bad("service_code", service_code="parking")  # unknown: 400, a bad value of the POST
    await bad("service_code", service_code="rectification")  # not offered to citizens
    await bad("description", description="长" * 2001)  # optional (tests/test_open311_xml.py), not endless
    assert "location" in await bad("address_id", address_id=None)
    # both of the world's shops stand at this address: it names neither
    assert "more than one shop" in await bad("address_string", address_id=None, address_string="漕溪北路1号")
    assert "names no shop" in await bad("address_string", address_id=None, address_string="南京东路9号")
    await bad("address_string", address_id=None, address_string="路" * 501)
    await bad("address_id", address_id="NOT-A-CODE")
    await bad("address_id", address_id=new_shop_code(12345))
    await bad("long", address_id=None, lat=str(LAT))
    await bad("lat", address_id=None, lat="north", long=str(LON))
    await bad("lat", address_id=None, lat="91", long=str(LON))
    far = await bad("lat", address_id=None, lat=str(LAT + 120 * METRE), long=str(LON))
    assert "no shop at this location" in far and "address_id" in far
    await bad("phone", phone="call me")
    await bad("email", email="not-an-address")
    await bad("first_name", first_name="名" * 41)
    # a JSON body is read too, and a broken one is an Open311 400 as well
    assert (await client.post(f"{API}/requests.json", json={"api_key": key, **good})).status_code == 201
    error(
        await client.post(
            f"{API}/requests.json", content=b"{not json", headers={"content-type": "application/json"}
        ),
        400,
    )
    error(await client.post(f"{API}/requests.json", json=["api_key", key]), 400)
    assert await conn.fetchval("SELECT count(*) FROM case_file WHERE via = 'open311'") == 1


async def test_a_location_finds_the_nearest_shop_that_is_not_closed(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)
    key = await make_key(conn)
    await place(conn, world.shop_a, LAT, LON)
    await place(conn, world.shop_b, LAT + 25 * METRE, LON, status="closed")  # nearer, but closed
    made = await filed(
        client,
        key,
        service_code="price",
        description="标价与收费不符",
        lat=str(LAT + 22 * METRE),
        long=str(LON),
    )
    request = await one(client, made["service_request_id"])
    assert request["address_id"] == world.shop_a and request["address"] == "老王面馆, 漕溪北路1号"
    # the shop's coordinates are published, not where the reporter stood
    assert (request["lat"], request["long"]) == (LAT, LON)
    assert await conn.fetchval(
        "SELECT shop_id FROM case_file WHERE request_id = $1", made["service_request_id"]
    ) == (world.shop_a_id)
    # once B is open again, it is the nearer one
    await place(conn, world.shop_b, LAT + 25 * METRE, LON)
    made_b = await filed(
        client, key, service_code="price", description="多收钱", lat=str(LAT + 22 * METRE), long=str(LON)
    )
    assert (await one(client, made_b["service_request_id"]))["address_id"] == world.shop_b


async def test_a_second_report_of_the_same_problem_joins_and_both_are_open(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)
    key = await make_key(conn)
    fields = {"service_code": "food_safety", "address_id": world.shop_a}
    first = await filed(client, key, description="吃完拉肚子", **fields)
    second_response = await client.post(
        f"{API}/requests.json", params={"lang": "en"}, data={"api_key": key, "description": "腹泻", **fields}
    )
    assert second_response.status_code == 201
    second = second_response.json()[0]
    assert second["service_request_id"] != first["service_request_id"]
    assert "joined" in second["service_notice"] and "joined" not in first["service_notice"]
    third = await filed(client, key, description="也拉肚子了", media_url="http://example.com/x.jpg", **fields)
    assert "并入" in third["service_notice"] and "media_url" in third["service_notice"]
    assert await conn.fetchval("SELECT count(*) FROM case_file WHERE category = 'food_safety'") == 1
    for made in (first, second):
        request = await one(client, made["service_request_id"])
        assert request["status"] == "open" and request["service_code"] == "food_safety"
        assert request["service_name"] == "食品安全" and request["agency_responsible"] == "食品安全监管科"
    joined = await one(client, second["service_request_id"], lang="en")
    assert "joined" in joined["service_notice"] and joined["agency_responsible"] == "Food safety division"
    assert (await one(client, first["service_request_id"]))["service_notice"] is None
    both = f"{first['service_request_id']},{second['service_request_id'].lower()}"
    assert sorted(await ids(client, service_request_id=both)) == sorted(
        [first["service_request_id"], second["service_request_id"]]
    )


# --- reading -----------------------------------------------------------------------------------


async def test_requests_are_filtered_by_id_code_status_and_dates(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)  # its complaint TS-WORLD-00001: hygiene, about shop A, open
    key = await make_key(conn)
    food = (
        await filed(client, key, service_code="food_safety", description="变质", address_id=world.shop_a)
    )["service_request_id"]
    price = (await filed(client, key, service_code="price", description="乱收费", address_id=world.shop_b))[
        "service_request_id"
    ]
    # an old complaint, an inspection's case: not in the default window, never a request
    await conn.execute(
        "INSERT INTO case_file (public_id, request_id, shop_id, source, category, opened_at) VALUES"
        " ('TS-OLD00-00001', 'TS-OLD00-00001', $1, 'complaint', 'hygiene', now() - interval '120 days'),"
        " ('TS-INSP0-00001', 'TS-INSP0-00001', $1, 'inspection', 'rectification', now())",
        world.shop_a_id,
    )
    listed = await ids(client)
    assert listed == [price, food, WORLD_REQUEST]  # newest first
    assert await ids(client, service_code="price") == [price]
    assert await ids(client, service_code="price,food_safety") == [price, food]
    assert await ids(client, status="closed") == []
    assert await ids(client, status="open,closed") == listed
    await conn.execute("UPDATE case_file SET status = 'resolved' WHERE request_id = $1", price)
    assert await ids(client, status="closed") == [price]
    assert await ids(client, status="open") == [food, WORLD_REQUEST]
    assert error(await client.get(f"{API}/requests.json", params={"status": "pending"}), 400).startswith(
        "status:"
    )
    now = datetime.datetime.now(datetime.UTC)
    day = datetime.timedelta(days=1)
    assert await ids(client, start_date=(now + day).isoformat()) == []
    assert await ids(client, end_date=(now - 10 * day).isoformat()) == []
    assert await ids(client, start_date=(now - day).isoformat(), end_date=(now + day).isoformat()) == listed
    # a date without a zone is the regulator's; a window ending before the old one misses today
    assert await ids(client, start_date=(now - 130 * day).date().isoformat()) == ["TS-OLD00-00001"]
    assert await ids(client, start_date=(now - 2 * day).strftime("%Y-%m-%dT%H:%M:%S")) == listed
    too_long = {"start_date": (now - 100 * day).isoformat(), "end_date": now.isoformat()}
    assert error(await client.get(f"{API}/requests.json", params=too_long), 400).startswith("end_date:")
    assert error(
        await client.get(f"{API}/requests.json", params={"start_date": "yesterday"}), 400
    ).startswith("start_date:")
    # ids override every other filter; other cases are not requests
    assert await ids(client, service_request_id=f"{food},TS-OLD00-00001", status="closed") == [
        food,
        "TS-OLD00-00001",
    ]
    assert await ids(client, service_request_id="TS-INSP0-00001,TS-NONE0-00000") == []
    error(await client.get(f"{API}/requests/TS-INSP0-00001.json"), 404)
    error(await client.get(f"{API}/requests/TS-NONE0-00000.json"), 404)
    for path in (f"requests/{food}.xml", "requests.xml"):
        response = await client.get(f"{API}/{path}")
        assert response.status_code == 200 and response.headers["content-type"] == "text/xml; charset=utf-8"
        assert food in response.text
    request = await one(client, food.lower())
    assert set(request) == {
        "service_request_id",
        "status",
        "status_notes",
        "service_name",
        "service_code",
        "description",
        "agency_responsible",
        "service_notice",
        "requested_datetime",
        "updated_datetime",
        "expected_datetime",
        "address",
        "address_id",
        "zipcode",
        "lat",
        "long",
        "media_url",
    }
    assert request["service_request_id"] == food and request["status_notes"] is None
    requested = datetime.datetime.fromisoformat(request["requested_datetime"])
    expected = datetime.datetime.fromisoformat(request["expected_datetime"])
    assert requested.utcoffset() == datetime.timedelta(hours=8)  # the regulator's zone, to the second
    assert datetime.timedelta(hours=23) < expected - requested <= datetime.timedelta(hours=24)
    assert request["zipcode"] is None and request["media_url"] is None


async def test_a_resolved_case_is_closed_with_its_public_note(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)
    key = await make_key(conn)
    number = (await filed(client, key, service_code="price", description="乱收费", address_id=world.shop_a))[
        "service_request_id"
    ]
    inspector_id = await conn.fetchval("SELECT id FROM account WHERE login = 'inspector_in'")
    me = auth.Principal(
        account_id=inspector_id,
        login="inspector_in",
        role="inspector",
        session_id="s",
        area_path="310199.310199001",
    )

    case_number = await conn.fetchval("SELECT public_id FROM case_file WHERE request_id = $1", number)

    async def move(action: str, note: str | None = None, public: bool = False) -> None:
        change = cases.TransitionIn(action=action, note=note, public=public)  # type: ignore[arg-type]
        await cases.transition(conn, me, case_number, change)

    await move("assign")
    await move("note", "内部：商户态度差")  # not public
    assert (await one(client, number))["status_notes"] is None
    await move("note", "已约谈商户", public=True)
    await move("start")
    request = await one(client, number)
    assert (request["status"], request["status_notes"]) == ("open", "已约谈商户")
    await move("resolve", "已责令退还多收款项")
    request = await one(client, number)
    assert (request["status"], request["status_notes"]) == ("closed", "已责令退还多收款项")
    await move("close")
    assert (await one(client, number))["status"] == "closed"
    # the reporter reopens: open again, and their reason (their own words) is not a status note
    tracking = await conn.fetchval("SELECT tracking_number FROM case_file WHERE request_id = $1", number)
    await cases.reopen_by_reporter(conn, tracking, "还是没退钱，电话13900001111")
    request = await one(client, number)
    assert (request["status"], request["status_notes"]) == ("open", "已责令退还多收款项")
    assert await ids(client, status="closed") == []


async def test_no_reporter_or_staff_data_in_any_answer(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)
    key = await make_key(conn)
    first_reporter = {
        "first_name": "张",
        "last_name": "三丰",
        "phone": "13911112222",
        "email": "zhang@example.com",
    }
    other_reporter = {
        "first_name": "Xiaoyu",
        "last_name": "Lisisi",
        "phone": "13733334444",
        "email": "li@example.com",
    }
    common = {"service_code": "food_safety", "address_id": world.shop_a}
    answers = [
        await file(
            client, key, description="我是张三丰，电话13911112222，吃完拉肚子", **common, **first_reporter
        ),
        await file(client, key, description="Xiaoyu Lisisi here: diarrhoea", **common, **other_reporter),
    ]
    numbers = [a.json()[0]["service_request_id"] for a in answers]
    inspector_id = await conn.fetchval("SELECT id FROM account WHERE login = 'inspector_in'")
    me = auth.Principal(
        account_id=inspector_id,
        login="inspector_in",
        role="inspector",
        session_id="s",
        area_path="310199.310199001",
    )
    first_case = await conn.fetchval("SELECT public_id FROM case_file WHERE request_id = $1", numbers[0])
    await cases.transition(conn, me, first_case, cases.TransitionIn(action="assign"))
    await cases.transition(
        conn, me, first_case, cases.TransitionIn(action="note", note="已派员核查", public=True)
    )
    # staff see it all (so the test can fail): the contact and the text are there
    case = await conn.fetchrow(
        "SELECT reporter_phone, description FROM case_file WHERE request_id = $1", numbers[0]
    )
    assert case is not None and case["reporter_phone"] == "13911112222" and "三丰" in case["description"]
    for params in ({}, {"lang": "en"}):
        answers += [
            await client.get(f"{API}/requests.json", params=params),
            await client.get(
                f"{API}/requests.json", params={**params, "service_request_id": ",".join(numbers)}
            ),
            *[await client.get(f"{API}/requests/{n}.json", params=params) for n in numbers],
            await client.get(f"{API}/services.json", params=params),
        ]
    answers.append(await client.get(f"{API}/discovery.json"))
    assert all(a.status_code in (200, 201) for a in answers)
    assert "已派员核查" in answers[2].text and numbers[1] in answers[2].text
    secrets = [
        *[first_reporter[f] for f in ("last_name", "phone", "email")],
        *other_reporter.values(),
        "张三丰",
        "拉肚子",
        "diarrhoea",
        "inspector_in",
        "测试账号",  # every account's display name in the world
    ]
    for answer in answers:
        for secret in secrets:
            for form in (secret, json.dumps(secret).strip('"')):
                assert form not in answer.text, (secret, answer.url)


async def test_a_key_files_at_most_600_an_hour(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)
    busy, other = await make_key(conn, "busy-app"), await make_key(conn, "other-app")
    busy_id = await conn.fetchval("SELECT id FROM open311_key WHERE name = 'busy-app'")
    await conn.execute(
        "INSERT INTO auth_attempt (key) SELECT $1 FROM generate_series(1, 599)", f"open311:{busy_id}"
    )
    fields = {"service_code": "price", "description": "乱收费", "address_id": world.shop_a}
    await filed(client, busy, **fields)  # the 600th
    refused = await file(client, busy, **fields)
    assert "600" in error(refused, 429) and int(refused.headers["retry-after"]) > 0
    await filed(client, other, **fields)  # another app is not held up


async def test_litestar_and_guard_errors_come_in_open311_format(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    # a page of another site may not post here (the access guard), told in Open311's format
    cross = await client.post(
        f"{API}/requests.json", data={"api_key": "x"}, headers={"origin": "https://evil.example"}
    )
    error(cross, 403)
    # in XML for a .xml path, Open311's <errors><error><code>
    refused = await client.post(f"{API}/requests.xml", data={})
    assert refused.status_code == 403 and refused.headers["content-type"] == "text/xml; charset=utf-8"
    assert "<errors><error><code>403</code><description>api_key" in refused.text
    error(await client.get(f"{API}/requests.json", params={"service_request_id": "X" * 65}), 400)


async def test_every_kind_of_person_gets_the_same_answers(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    """The rows of the access matrix (tests/test_access.py) for these routes."""
    world = await w.build(conn, client)
    calls = [
        ("GET", f"{API}/discovery.json", 200),
        ("GET", f"{API}/services.json", 200),
        ("GET", f"{API}/services/hygiene.json", 200),
        ("GET", f"{API}/requests.json", 200),
        ("POST", f"{API}/requests.json", 403),
        ("GET", f"{API}/requests/{WORLD_REQUEST}.json", 200),
        ("GET", f"{API}/discovery.xml", 200),
        ("GET", f"{API}/services.xml", 200),
        ("GET", f"{API}/services/hygiene.xml", 200),
        ("GET", f"{API}/requests.xml", 200),
        ("POST", f"{API}/requests.xml", 403),
        ("GET", f"{API}/requests/{WORLD_REQUEST}.xml", 200),
        ("GET", f"{API}/tokens/{WORLD_REQUEST}.xml", 200),
        ("GET", f"{API}/tokens/{WORLD_REQUEST}.json", 200),
        ("GET", f"{API}/nothing.xml", 404),
        ("POST", f"{API}/nothing.xml", 404),
    ]
    for role in w.ROLES:
        for method, path, status in calls:
            response = await client.request(
                method, path, headers=world.headers(role), data={} if method == "POST" else None
            )
            assert response.status_code == status, (role, method, path, response.text)


# --- the keys ----------------------------------------------------------------------------------


def _cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MERCHANT_CODE_")}
    env["MERCHANT_CODE_DATABASE_URL"] = db_url
    return subprocess.run(
        [sys.executable, "-m", "merchant_code", "open311", "key", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


async def test_keys_are_created_once_shown_and_disabled_from_the_cli(
    client: AsyncTestClient[Any], conn: asyncpg.Connection, db_url: str
) -> None:
    _, code = await factories.shop(conn)
    created = await asyncio.to_thread(_cli, db_url, "create", "city-app")
    assert created.returncode == 0, created.stderr
    found = re.search(r"open311 key city-app: (\S+)", created.stdout)
    assert found is not None
    key = found.group(1)
    assert len(key) >= 40
    row = await conn.fetchrow("SELECT * FROM open311_key WHERE name = 'city-app'")
    assert row is not None and row["key_hash"] == open311.hash_key(key) and row["disabled_at"] is None
    assert key not in repr(dict(row)) and key.encode() not in row["key_hash"]  # only the hash is kept
    fields = {"service_code": "price", "description": "乱收费", "address_id": code}
    await filed(client, key, **fields)
    again = await asyncio.to_thread(_cli, db_url, "create", "city-app")
    assert again.returncode == 1 and "exists" in again.stderr and "Traceback" not in again.stderr
    bad = await asyncio.to_thread(_cli, db_url, "create", "City App")
    assert bad.returncode == 1 and "name" in bad.stderr
    disabled = await asyncio.to_thread(_cli, db_url, "disable", "city-app")
    assert disabled.returncode == 0 and "disabled" in disabled.stdout
    error(await file(client, key, **fields), 403)
    twice = await asyncio.to_thread(_cli, db_url, "disable", "city-app")
    assert twice.returncode == 1 and "no enabled Open311 key" in twice.stderr
    listed = await asyncio.to_thread(_cli, db_url, "list")
    assert listed.returncode == 0 and re.search(r"city-app\s+created \S+\s+disabled", listed.stdout)
    assert key not in listed.stdout
