"""No internal (sequential) id in any URL or body: the README promises that internal ids never
appear, and a row number tells whoever holds one how many others exist and where to look
(inbox item 761, so 760 and 762).

Three walks over a seeded world: the OpenAPI document (path parameters, cursors and response
fields as declared), every JSON answer of every GET operation for every kind of person (fields
named `id`, `..._id` or `...Id`, and the `next` cursors, as really produced), and every HTML page
reachable from the start pages for every kind of person (each link's path segments and query
values). A number that is not an id is named below with the reason it is not one.
"""

from __future__ import annotations

import re
from collections import deque
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit

import asyncpg
from litestar.testing import AsyncTestClient

from tests import world as w

PEOPLE = (*w.ROLES, "pii_inspector")

# query parameters whose numbers are not ids, and why
NON_ID_QUERY = {
    "limit": "a page size",
    "offset": "a position in a list sorted by distance",
    "days": "days since delivery",
    "radius_m": "a distance in metres",
    "since": "a change-feed watermark: a position in the feed, not a row",
    "lat": "a coordinate",
    "lon": "a coordinate",
    "year": "a year",
    "page": "a page number",
    "area": "an administrative division's public code (GB/T 2260)",
}
# response fields that hold such numbers
NON_ID_FIELDS = {"next_since": NON_ID_QUERY["since"], "next_offset": NON_ID_QUERY["offset"]}
CURSOR_PARAMETERS = ("before", "after")
CURSOR_FIELDS = ("next",)
NUMERIC = re.compile(r"^[+-]?\d+$")
# answers that are not JSON or HTML documents (stickers, CSV files) and the schema's own pages
NOT_DOCUMENTS = (".svg", ".png", ".csv", ".pdf", ".xml")


def _is_id_name(name: str) -> bool:
    return name == "id" or name.endswith(("_id", "Id"))


def _bare_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, str) and bool(NUMERIC.match(value)))


# --- the OpenAPI document ----------------------------------------------------------------------


def _types(schema: dict[str, Any], components: dict[str, Any]) -> set[str]:
    if "$ref" in schema:
        return _types(components[schema["$ref"].rsplit("/", 1)[1]], components)
    found = {schema["type"]} if isinstance(schema.get("type"), str) else set(schema.get("type") or [])
    for key in ("oneOf", "anyOf", "allOf"):
        for part in schema.get(key, []):
            found |= _types(part, components)
    return found


def _schema_fields(schema: Any, where: str, components: dict[str, Any], out: list[str]) -> None:
    if isinstance(schema, dict):
        for name, prop in (schema.get("properties") or {}).items():
            if (_is_id_name(name) or name in CURSOR_FIELDS) and "integer" in _types(prop, components):
                out.append(f"{where}: field {name} is declared an integer")
        for value in schema.values():
            _schema_fields(value, where, components, out)
    elif isinstance(schema, list):
        for value in schema:
            _schema_fields(value, where, components, out)


def document_findings(document: dict[str, Any]) -> list[str]:
    components = document.get("components", {}).get("schemas", {})
    found: list[str] = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            for parameter in operation.get("parameters", []):
                name, place = parameter["name"], parameter["in"]
                numeric = "integer" in _types(parameter.get("schema", {}), components)
                is_id = place == "path" or _is_id_name(name) or name in CURSOR_PARAMETERS
                if numeric and is_id and name not in NON_ID_QUERY:
                    found.append(f"{where}: {place} parameter {name} is declared an integer")
    for name, schema in components.items():
        _schema_fields(schema, f"schema {name}", components, found)
    return found


# --- real answers ------------------------------------------------------------------------------


def body_findings(body: Any, where: str, path: str = "") -> list[str]:
    found: list[str] = []
    if isinstance(body, dict):
        for key, value in body.items():
            here = f"{path}.{key}" if path else key
            checked = _is_id_name(key) or key in CURSOR_FIELDS
            if checked and key not in NON_ID_FIELDS and _bare_number(value):
                found.append(f"{where}: {here} = {value!r}")
            found += body_findings(value, where, here)
    elif isinstance(body, list):
        for index, value in enumerate(body):
            found += body_findings(value, where, f"{path}[{index}]")
    return found


def _filled(path: str, world: w.World) -> str | None:
    known = {
        "code": world.shop_a,
        "number": world.complaint_a if path.startswith("/track/") else world.case_a,
        "policy_id": world.policy,
        "item_id": world.inbox_a,
        "request_file": "SR-WORLD-00001.json",
        "service_file": "hygiene.json",
    }
    names = re.findall(r"\{(\w+)\}", path)
    if any(name not in known for name in names):
        return None
    return re.sub(r"\{(\w+)\}", lambda m: str(known[m.group(1)]), path)


def link_findings(href: str, where: str) -> list[str]:
    """A link (or a redirect's Location) with a bare number as a path segment, or as the value of
    a query parameter that is not named in NON_ID_QUERY."""
    parts = urlsplit(href)
    if parts.scheme not in ("", "http", "https") or parts.netloc not in ("", "testserver.local"):
        return []
    found = [f"{where}: {href} (segment {s})" for s in parts.path.split("/") if NUMERIC.match(s)]
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if NUMERIC.match(value) and name not in NON_ID_QUERY:
            found.append(f"{where}: {href} ({name}={value})")
    return found


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"a": "href", "link": "href", "form": "action", "img": "src", "script": "src"}.get(tag)
        for name, value in attrs:
            if name == wanted and value:
                self.links.append(value)


def _links(html: str) -> list[str]:
    parser = _Links()
    parser.feed(html)
    return parser.links


async def seed_more(conn: asyncpg.Connection, client: AsyncTestClient[Any], world: w.World) -> None:
    """Enough of everything that each list has a second page and each table a row to show."""
    # 60 more messages in shop A's inbox: its page (50 a page) links to the older ones
    await conn.execute(
        "INSERT INTO delivery (policy_id, shop_id, occurrence, status, delivered_at)"
        " SELECT p.id, $1, now() - make_interval(hours => n), 'delivered', now() - make_interval(hours => n)"
        " FROM policy p, generate_series(1, 60) n WHERE p.public_id = $2::uuid",
        world.shop_a_id,
        world.policy,
    )
    routed = await client.put(
        "/api/v1/manage/routes",
        json={"area_code": "310199001", "category": "hygiene", "department": "food_safety"},
        headers=world.headers("manager"),
    )
    assert routed.status_code == 200, routed.text
    filed = await client.post(
        f"/api/v1/shops/{world.shop_a}/complaints", json={"category": "price", "text": "价格标签与收费不符"}
    )
    assert filed.status_code == 201, filed.text


async def test_the_openapi_document_declares_no_integer_id(client: AsyncTestClient[Any]) -> None:
    document = (await client.get("/schema/openapi.json")).json()
    found = document_findings(document)
    assert found == [], "\n".join(found)


async def test_no_answer_of_any_get_operation_carries_a_bare_number_as_an_id(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)
    await seed_more(conn, client, world)
    document = (await client.get("/schema/openapi.json")).json()
    found: list[str] = []
    answered = 0
    for path, item in document["paths"].items():
        url = _filled(path, world)
        if "get" not in item or url is None or path.startswith("/schema") or url.endswith(NOT_DOCUMENTS):
            continue
        names = {p["name"] for p in item["get"].get("parameters", [])}
        urls = [url, f"{url}?limit=1"] if "limit" in names else [url]
        for role in PEOPLE:
            for target in urls:
                response = await client.get(target, headers=world.headers(role, accept="application/json"))
                found += link_findings(response.headers.get("location", ""), f"{role} GET {target}")
                if response.status_code == 200 and "json" in response.headers.get("content-type", ""):
                    answered += 1
                    found += body_findings(response.json(), f"{role} GET {target}")
    assert found == [], "\n".join(found)
    assert answered >= 60  # and the walk saw answers: each kind of person's own


START_PAGES = (
    "/me",
    "/inbox",
    "/cases",
    "/merchant/cases",
    "/manage/policies",
    "/dashboard",
    "/claim",
    "/login",
    "/s/{a}",
    "/s/{b}",
    "/track/{c}",
)
PAGES_PER_PERSON = 120


async def _crawl(client: AsyncTestClient[Any], world: w.World, role: str) -> tuple[list[str], list[str]]:
    """What the pages a person can reach link to: (findings, the pages read)."""
    start = [p.format(a=world.shop_a, b=world.shop_b, c=world.complaint_a) for p in START_PAGES]
    queue, seen, found, pages = deque(start), set(start), [], []
    while queue and len(pages) < PAGES_PER_PERSON:
        url = queue.popleft()
        response = await client.get(url, headers=world.headers(role, accept="text/html"))
        found += link_findings(response.headers.get("location", ""), f"{role} at {url} (redirect)")
        if response.status_code != 200 or "html" not in response.headers.get("content-type", ""):
            continue
        pages.append(url)
        for href in _links(response.text):
            found += link_findings(href, f"{role} at {url}")
            target = urljoin(url, href.split("#", 1)[0])
            parts = urlsplit(target)
            if parts.netloc or not parts.path.startswith("/") or parts.path.endswith(NOT_DOCUMENTS):
                continue
            local = parts.path + (f"?{parts.query}" if parts.query else "")
            if local not in seen and not local.startswith("/schema"):
                seen.add(local)
                queue.append(local)
    return found, pages


async def test_no_page_links_to_a_bare_number_in_an_id_position(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)
    await seed_more(conn, client, world)
    found: list[str] = []
    pages = {}
    for role in PEOPLE:
        role_found, pages[role] = await _crawl(client, world, role)
        found += role_found
    assert found == [], "\n".join(found)
    # and the crawl reached each kind of person's own pages: the merchant's messages and the
    # inbox's second page, the staff's cases, the citizen's scan page
    merchant = pages["merchant_a"]
    assert sum(p.startswith("/inbox/") for p in merchant) >= 50
    assert any(p.startswith("/inbox?before=") for p in merchant)
    assert any(p.startswith("/cases/") for p in pages["inspector_in"])
    assert f"/s/{world.shop_a}" in pages["anonymous"]


def test_the_checks_see_a_number_in_each_position() -> None:
    assert link_findings("/inbox/761?lang=en", "x") == ["x: /inbox/761?lang=en (segment 761)"]
    assert link_findings("/inbox?before=761&lang=en", "x") == ["x: /inbox?before=761&lang=en (before=761)"]
    assert link_findings("/manage/policies/p?days=7", "x") == []
    assert link_findings("https://example.org/761", "x") == []
    assert body_findings({"items": [{"id": 761, "policy_id": "a"}], "next": "760"}, "x") == [
        "x: items[0].id = 761",
        "x: next = '760'",
    ]
    assert body_findings({"id": "CS-ABCDE-12345", "next_since": 42, "count": 3}, "x") == []
