"""Open311 as an off-the-shelf client uses it: a small GeoReport v2 client written from the spec
(http://wiki.open311.org/GeoReport_v2) alone, speaking its baseline format, XML, with form-encoded
POSTs, runs the whole flow against the service; the jurisdiction it names is checked; a request
located by an address_string alone, with no description, is filed and found again; no stored text
can break the XML."""

from __future__ import annotations

import datetime
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import pytest
from litestar.testing import AsyncTestClient

from merchant_code.app import create_app
from merchant_code.routes import open311
from merchant_code.settings import Settings, SettingsError
from tests import world as w
from tests.test_open311 import API, LAT, LON, METRE, make_key, place

JURISDICTION = "market.example.gov.cn"
# the elements the spec marks as lists (⇊): a container of one element per item
LISTS = {"services", "service_requests", "errors", "attributes", "values", "endpoints", "formats"}


def parse(content: bytes) -> ET.Element:
    # the service's own answers, read by test code: trusted (the service itself parses no XML)
    return ET.fromstring(content)  # noqa: S314


def spark(element: ET.Element) -> Any:
    """An XML document as the spec's Spark convention maps it: lists, objects, texts (None if empty)."""
    if element.tag in LISTS:
        return [spark(child) for child in element]
    if len(element) == 0:
        return element.text
    return {child.tag: spark(child) for child in element}


class GeoReport:
    """The client: XML documents under one endpoint URL, with its jurisdiction_id."""

    def __init__(self, http: AsyncTestClient[Any], jurisdiction: str | None = JURISDICTION) -> None:
        self.http, self.jurisdiction = http, jurisdiction

    def _read(self, response: Any, expect: int, root: str) -> Any:
        assert response.status_code == expect, response.text
        assert response.headers["content-type"] == "text/xml; charset=utf-8"
        assert response.content.startswith(b'<?xml version="1.0" encoding="utf-8"?>')
        document = parse(response.content)
        assert document.tag == root, response.text
        return spark(document)

    async def get(self, path: str, expect: int = 200, root: str = "service_requests", **params: str) -> Any:
        if self.jurisdiction is not None:
            params.setdefault("jurisdiction_id", self.jurisdiction)
        return self._read(await self.http.get(f"{API}/{path}.xml", params=params), expect, root)

    async def post(self, expect: int = 201, root: str = "service_requests", **fields: str) -> Any:
        if self.jurisdiction is not None:
            fields.setdefault("jurisdiction_id", self.jurisdiction)
        response = await self.http.post(f"{API}/requests.xml", data=fields)
        return self._read(response, expect, root)

    async def error(self, status: int, path: str = "", **fields: str) -> str:
        """The one error of a refusal (a POST if fields are given), in `<errors><error>`."""
        if fields or not path:
            errors = await self.post(status, "errors", **fields)
        else:
            errors = await self.get(path, status, "errors")
        [item] = errors
        assert set(item) == {"code", "description"} and item["code"] == str(status)
        description: str = item["description"]
        return description


@pytest.fixture
async def city(settings: Settings) -> AsyncIterator[AsyncTestClient[Any]]:
    app = create_app(msgspec.structs.replace(settings, open311_jurisdiction=JURISDICTION))
    async with AsyncTestClient(app=app) as client:
        yield client


async def test_a_client_written_from_the_spec_files_and_follows_a_request_in_xml(
    city: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, city)
    key = await make_key(conn)
    api = GeoReport(city)
    # discovery: both formats, the endpoint, and the jurisdiction it serves
    found = await api.get("discovery", root="discovery")
    [endpoint] = found["endpoints"]
    assert endpoint["formats"] == ["text/xml", "application/json"] and endpoint["url"].endswith(API)
    assert endpoint["specification"] == "http://wiki.open311.org/GeoReport_v2"
    assert JURISDICTION in found["contact"]
    services = await api.get("services", root="services")
    price = next(s for s in services if s["service_code"] == "price")
    assert (price["metadata"], price["type"], price["service_name"]) == ("false", "realtime", "价格问题")
    assert await api.get("services/price", root="service_definition") == {
        "service_code": "price",
        "attributes": [],
    }
    # a request by address_string alone (the shop's name and address, as requests read), no description
    [made] = await api.post(api_key=key, service_code="price", address_string="老王面馆，  漕溪北路1号")
    number = made["service_request_id"]
    assert number.startswith("SR-") and made["account_id"] is None and "/track/TS-" in made["service_notice"]
    case = await conn.fetchrow("SELECT shop_id, description FROM case_file WHERE request_id = $1", number)
    assert case is not None and case["shop_id"] == world.shop_a_id
    assert case["description"] == "地点（address_string）：老王面馆， 漕溪北路1号"  # kept as given, for staff
    # read back by id and by token
    [request] = await api.get(f"requests/{number}")
    assert (request["service_request_id"], request["status"], request["service_code"]) == (
        number,
        "open",
        "price",
    )
    assert request["address_id"] == world.shop_a and request["address"] == "老王面馆, 漕溪北路1号"
    assert request["description"] == "价格问题投诉（投诉原文不公开）"
    assert datetime.datetime.fromisoformat(request["requested_datetime"]).utcoffset() == datetime.timedelta(
        hours=8
    )
    assert await api.get(f"tokens/{number}") == [{"service_request_id": number, "token": number}]
    # listed, with the spec's filters
    listed = [r["service_request_id"] for r in await api.get("requests", service_code="price", status="open")]
    assert listed == [number]
    assert await api.get("requests", service_code="price", status="closed") == []
    assert await api.get("requests", start_date="2010-05-24T00:00:00Z", end_date="2010-06-24T00:00:00Z") == []
    both = await api.get("requests", service_request_id=f"{number},SR-WORLD-00001")
    assert {r["service_request_id"] for r in both} == {number, "SR-WORLD-00001"}
    # a shop's name alone names it; an unmatched address_string with lat and long is kept as given
    [by_name] = await api.post(api_key=key, service_code="hygiene", address_string="李记小吃")
    assert (await api.get(f"requests/{by_name['service_request_id']}"))[0]["address_id"] == world.shop_b
    await place(conn, world.shop_a, LAT, LON)
    [near] = await api.post(
        api_key=key,
        service_code="service",
        address_string="opposite the metro exit",
        lat=str(LAT + 10 * METRE),
        long=str(LON),
        description="服务态度差",
    )
    kept = await conn.fetchrow(
        "SELECT shop_id, description FROM case_file WHERE request_id = $1", near["service_request_id"]
    )
    assert kept is not None and kept["shop_id"] == world.shop_a_id
    assert kept["description"] == "服务态度差\n地点（address_string）：opposite the metro exit"
    # errors, each in <errors><error> with its status
    assert "nothing" in await api.error(404, "services/nothing")
    assert "no service request" in await api.error(404, "requests/SR-NONE0-00000")
    assert "no service request" in await api.error(404, "tokens/123456")
    unknown = await api.error(400, api_key=key, service_code="parking", address_string="李记小吃")
    assert unknown.startswith("service_code:")
    assert "api_key" in await api.error(403, service_code="price", address_string="李记小吃")
    elsewhere = GeoReport(city, "sfgov.org")
    for path in ("services", "services/price", "requests", f"requests/{number}", f"tokens/{number}"):
        assert (await elsewhere.error(400, path)).startswith("jurisdiction_id:"), path
    refused = await elsewhere.error(400, api_key=key, service_code="price", address_string="李记小吃")
    assert refused.startswith("jurisdiction_id:") and JURISDICTION in refused
    # a client of a one-jurisdiction server may leave it out; case does not matter
    now = await api.get(f"requests/{number}")
    assert await GeoReport(city, None).get(f"requests/{number}") == now
    assert await GeoReport(city, JURISDICTION.upper()).get(f"requests/{number}") == now
    count = await conn.fetchval("SELECT count(*) FROM case_file WHERE via = 'open311'")
    assert count == 3


async def test_the_same_documents_come_as_json(city: AsyncTestClient[Any], conn: asyncpg.Connection) -> None:
    world = await w.build(conn, city)
    key = await make_key(conn)
    made = await city.post(
        f"{API}/requests.json",
        data={
            "api_key": key,
            "service_code": "price",
            "address_id": world.shop_a,
            "jurisdiction_id": JURISDICTION,
        },
    )
    assert made.status_code == 201, made.text
    number = made.json()[0]["service_request_id"]
    for path in (
        f"requests/{number}",
        f"tokens/{number}",
        "requests",
        "services",
        "services/price",
        "discovery",
    ):
        as_json = await city.get(f"{API}/{path}.json")
        as_xml = await city.get(f"{API}/{path}.xml")
        assert as_json.headers["content-type"] == "application/json"
        assert spark(parse(as_xml.content)) == _texts(as_json.json()), path
    wrong = await city.get(f"{API}/requests.json", params={"jurisdiction_id": "sfgov.org"})
    assert wrong.status_code == 400 and wrong.json()[0]["description"].startswith("jurisdiction_id:")


def _texts(value: Any) -> Any:
    """JSON as XML carries it: every scalar a text, booleans true/false, null empty."""
    if isinstance(value, list):
        return [_texts(v) for v in value]
    if isinstance(value, dict):
        return {k: _texts(v) for k, v in value.items()}
    if isinstance(value, bool):
        return "true" if value else "false"
    return None if value is None else str(value)


async def test_no_stored_text_can_break_or_inject_into_the_xml(
    city: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, city)
    nasty_note = '</status_notes><status>closed</status><!ENTITY x "y">&amp; &x; \x01\x1f\ufffe end'
    nasty_name = "<b>老王&面馆</b>]]>"
    await conn.execute("UPDATE shop SET name = $2 WHERE id = $1", world.shop_a_id, nasty_name)
    staff = await conn.fetchval("SELECT id FROM account WHERE login = 'inspector_in'")
    await conn.execute(
        "INSERT INTO case_event (case_id, actor_account_id, kind, note, public)"
        " SELECT id, $1, 'note', $2, true FROM case_file WHERE request_id = 'SR-WORLD-00001'",
        staff,
        nasty_note,
    )
    [request] = await GeoReport(city).get("requests/SR-WORLD-00001")
    assert request["status"] == "open"
    assert request["status_notes"] == nasty_note.replace("\x01", "\ufffd").replace("\x1f", "\ufffd").replace(
        "\ufffe", "\ufffd"
    )
    assert request["address"] == f"{nasty_name}, 漕溪北路1号"
    raw = (await city.get(f"{API}/requests/SR-WORLD-00001.xml")).text
    assert "<!ENTITY" not in raw and "<b>" not in raw and "</status_notes><status>" not in raw


async def test_the_jurisdiction_is_the_setting_or_the_public_hosts_domain(
    settings: Settings, client: AsyncTestClient[Any]
) -> None:
    public = msgspec.structs.replace(settings, public_url="https://www.shqs.example.cn/market")
    assert open311.jurisdiction(public) == "shqs.example.cn"
    assert (
        open311.jurisdiction(msgspec.structs.replace(public, open311_jurisdiction="Pudong.Gov.CN"))
        == "pudong.gov.cn"
    )
    assert open311.jurisdiction(settings) == "127.0.0.1"  # the test service's own host
    env = {"MERCHANT_CODE_OPEN311_JURISDICTION": "city.gov"}
    assert Settings.from_env(env).open311_jurisdiction == "city.gov"
    for bad in ("two words", "a/b", "-city.gov", "x" * 101):
        with pytest.raises(SettingsError, match="OPEN311_JURISDICTION"):
            Settings.from_env({"MERCHANT_CODE_OPEN311_JURISDICTION": bad})
    answer = await client.get(f"{API}/services.xml", params={"jurisdiction_id": "127.0.0.1"})
    assert answer.status_code == 200
