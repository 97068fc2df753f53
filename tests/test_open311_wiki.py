"""The GeoReport v2 wiki's own examples (tests/fixtures/open311/georeport_v2_wiki_examples.txt,
copied with their source) replayed against the service: its example POST, sent as it is written
(only the api_key is ours), is filed; the sample URLs of its tables are answered; and every answer
has the element names and structure of the wiki's example answer, in XML and in JSON."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import asyncpg
import msgspec
import pytest
from litestar.testing import AsyncTestClient

from merchant_code.app import create_app
from merchant_code.routes import open311
from merchant_code.routes.open311_format import to_xml
from merchant_code.settings import Settings
from tests import world as w
from tests.test_open311 import API, make_key, place
from tests.test_open311_xml import parse

FIXTURE = Path(__file__).parent / "fixtures" / "open311" / "georeport_v2_wiki_examples.txt"


def examples() -> dict[str, str]:
    text = FIXTURE.read_text(encoding="utf-8")
    parts = re.split(r"^=== (\S+)\n", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], (p.strip("\n") for p in parts[2::2]), strict=True))


EXAMPLES = examples()


def _document(name: str) -> str:
    """An example's document, without the HTTP status line the error examples start with."""
    return re.sub(r"^HTTP/1\.1 .*\n\s*", "", EXAMPLES[name])


def shape(element: Any) -> dict[str, Any]:
    """Element names and nesting: each child name with the shape of its first occurrence."""
    found: dict[str, Any] = {}
    for child in element:
        found.setdefault(child.tag, shape(child))
    return found


def xml_shape(name: str) -> tuple[str, dict[str, Any]]:
    root = parse(_document(name).encode())
    return root.tag, shape(root)


def json_keys(value: Any) -> Any:
    """Keys and nesting of a JSON document: objects by their keys, lists by their first item."""
    if isinstance(value, list):
        return [json_keys(value[0])] if value else []
    if isinstance(value, dict):
        return {k: json_keys(v) for k, v in value.items()}
    return None


def wiki_json(name: str) -> Any:
    # the wiki writes codes as numbers with leading zeros ("service_code":001): read them as text
    return json.loads(re.sub(r'("\s*:\s*)(0\d+)\b', r'\1"\2"', _document(name)))


@pytest.fixture
async def city(settings: Settings) -> AsyncIterator[AsyncTestClient[Any]]:
    """The service as the wiki's city: jurisdiction city.gov, a service 001, a shop at its point."""
    app = create_app(msgspec.structs.replace(settings, open311_jurisdiction="city.gov"))
    async with AsyncTestClient(app=app) as client:
        yield client


async def _city_world(conn: asyncpg.Connection, client: AsyncTestClient[Any]) -> w.World:
    world = await w.build(conn, client)
    await conn.execute(
        "INSERT INTO case_category (code, name, name_en, sla_hours, public)"
        " VALUES ('001', '垃圾桶长期摆放', 'Cans left out 24x7', 24, true)"
    )
    await place(conn, world.shop_a, 37.76524078, -122.4212043)
    return world


def _example_post(key: str) -> tuple[str, dict[str, str], str]:
    head, _, body = EXAMPLES["post_request.http"].partition("\n\n")
    request_line, *header_lines = head.splitlines()
    method, path = request_line.split()[:2]
    assert method == "POST" and path == "/dev/v2/requests.xml"
    headers = dict(line.split(": ", 1) for line in header_lines if not line.startswith("Host:"))
    assert "api_key=xyz&" in body
    return path.rsplit("/", 1)[1], headers, body.replace("api_key=xyz&", f"api_key={key}&", 1)


async def test_the_wikis_example_post_is_filed_and_answered_as_the_wiki_shows(
    city: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await _city_world(conn, city)
    key = await make_key(conn)
    document, headers, body = _example_post(key)
    answer = await city.post(f"{API}/{document}", content=body.encode(), headers=headers)
    assert answer.status_code == 201, answer.text
    assert answer.headers["content-type"] == "text/xml; charset=utf-8"
    assert (parse(answer.content).tag, shape(parse(answer.content))) == xml_shape("post_response.xml")
    number = parse(answer.content).findtext("request/service_request_id")
    case = await conn.fetchrow(
        "SELECT shop_id, category, description, reporter_name, reporter_phone, reporter_email"
        " FROM case_file WHERE request_id = $1",
        number,
    )
    assert case is not None and (case["shop_id"], case["category"]) == (world.shop_a_id, "001")
    sent = dict(parse_qsl(body))
    assert case["description"] == f"{sent['description']}\n地点（address_string）：{sent['address_string']}"
    assert (case["reporter_name"], case["reporter_phone"], case["reporter_email"]) == (
        "john smith",
        "111111111",
        "smit333@sfgov.edu",
    )
    # the same POST to requests.json: the wiki's JSON answer's keys
    as_json = await city.post(f"{API}/requests.json", content=body.encode(), headers=headers)
    assert as_json.status_code == 201, as_json.text
    assert json_keys(as_json.json()) == json_keys(wiki_json("post_response.json"))


async def test_the_wikis_sample_urls_answer_with_its_examples_structure(
    city: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    await _city_world(conn, city)
    key = await make_key(conn)
    document, headers, body = _example_post(key)
    filed = await city.post(f"{API}/{document}", content=body.encode(), headers=headers)
    number = parse(filed.content).findtext("request/service_request_id")
    # (the sample URL of a table, or one for a request of ours; the example its answer is shaped as)
    replays = [
        ("services.xml?jurisdiction_id=city.gov", 200, "services"),
        ("services/033.xml?jurisdiction_id=city.gov", 404, "errors"),  # no service 033 here
        (
            "requests.xml?start_date=2010-05-24T00:00:00Z&end_date=2010-06-24T00:00:00Z&status=open"
            "&jurisdiction_id=city.gov",
            200,
            None,
        ),  # nothing that long ago: an empty list
        ("requests.xml?jurisdiction_id=city.gov", 200, "requests"),
        (f"requests/{number}.xml?jurisdiction_id=city.gov", 200, "request"),
        ("requests/123456.xml?jurisdiction_id=city.gov", 404, "errors"),
        (f"tokens/{number}.xml?jurisdiction_id=city.gov", 200, "token"),
        ("tokens/123456.xml?jurisdiction_id=city.gov", 404, "errors"),
        ("discovery.xml", 200, "discovery"),
    ]
    for url, status, example in replays:
        for fmt in ("xml", "json"):
            answer = await city.get(f"{API}/{url.replace('.xml', '.' + fmt, 1)}")
            assert answer.status_code == status, (url, fmt, answer.text)
            if fmt == "json":
                got = json_keys(answer.json())
                assert got == ([] if example is None else json_keys(wiki_json(f"{example}.json"))), url
            elif example is None:
                assert (parse(answer.content).tag, len(parse(answer.content))) == ("service_requests", 0)
            else:
                assert (parse(answer.content).tag, shape(parse(answer.content))) == xml_shape(
                    f"{example}.xml"
                )
    # the wiki's errors example is an invalid api_key's
    refused = await city.post(f"{API}/requests.xml", data={"api_key": "xyz", "service_code": "001"})
    assert refused.status_code == 403
    assert (parse(refused.content).tag, shape(parse(refused.content))) == xml_shape("errors.xml")


async def test_a_service_definition_has_the_wikis_structure(
    city: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    await _city_world(conn, city)
    root, wiki = xml_shape("service_definition.xml")
    for fmt in ("xml", "json"):
        answer = await city.get(f"{API}/services/001.{fmt}", params={"jurisdiction_id": "city.gov"})
        assert answer.status_code == 200, answer.text
        if fmt == "xml":
            ours = parse(answer.content)
            assert (
                ours.tag == root and set(shape(ours)) == set(wiki) and len(ours.find("attributes") or []) == 0
            )
        else:
            assert set(answer.json()) == set(wiki_json("service_definition.json"))
    # no service has attributes yet; one would be written with the wiki's elements
    attribute = open311.ServiceAttribute(
        variable=True,
        code="WHISHETN",
        datatype="singlevaluelist",
        required=True,
        datatype_description=None,
        order=1,
        description="What is the ticket/tag/DL number?",
        values=[open311.AttributeValue(key="123", name="Ford")],
    )
    written = parse(to_xml("service_definition", {"service_code": "DMV66", "attributes": [attribute]}))
    assert (written.tag, shape(written)) == (root, wiki)
    definition = {"service_code": "DMV66", "attributes": [attribute]}
    assert json_keys(msgspec.to_builtins(definition)) == json_keys(wiki_json("service_definition.json"))
