"""Bytes no JSON reader can use, sent to every write the app serves: never a 500.

The routes are enumerated from the app (a route added later is covered without a row here), each
sent as a person its access rule lets through, aimed at the world's own objects, so the body is
read. Every write must answer below 500; every operation the OpenAPI document says takes JSON
must refuse the body with a 400 or 422 problem document naming the field at fault (Open311: its
own error list, naming it too).
"""

from __future__ import annotations

import collections
import re
from typing import Any

import asyncpg
import msgspec
import pytest
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient

from merchant_code import auth
from merchant_code.app import create_app
from merchant_code.settings import Settings
from tests import world as w
from tests.test_schema_fuzz import real_path_parameters

# (what, the bytes, the field the refusal names)
BAD_BODIES = {
    "cut short": (b'{"title":', "body"),
    "not UTF-8": (b'{"title":"\xff"}', "body"),
    "a number past a double": (b'{"title":1e99999}', "body"),
    "an integer past 64 bits": (b'{"title":' + b"9" * 40 + b"}", "title"),
    "an integer of 5,000 digits": (b'{"title":' + b"9" * 5000 + b"}", "body"),
    "a lone surrogate": (b'{"title":"\\udc00"}', "body"),
    "a NUL byte": (b'{"title":"a\x00b"}', "body"),
    "an escaped NUL": (b'{"title":"a\\u0000b"}', "title"),
    "1,000 levels deep": (b"[" * 1000 + b"]" * 1000, "body"),
    "1,000 levels deep in a field": (b'{"title":' + b"[" * 1000 + b"]" * 1000 + b"}", "body"),
    "33 levels deep": (b'{"title":' + b"[" * 32 + b"]" * 32 + b"}", "body"),
}
WRITES = ("POST", "PUT", "PATCH", "DELETE")
# who each access rule lets through: shop A's owner, or staff whose area covers shop A
PERSON = {
    "public": "anonymous",
    "login": "merchant_a",
    "merchant": "merchant_a",
    "staff": "inspector_in",
    "manager": "manager",
    "admin": "admin",
}


def writes(app: Any) -> list[tuple[str, str, str]]:
    """(method, path as OpenAPI spells it, access rule) of every write route of the app."""
    found = []
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            path = re.sub(r"\{(\w+):[^}]+\}", r"{\1}", route.path)
            for method, (handler, _) in route.route_handler_map.items():
                if method in WRITES:
                    found.append((method, path, handler.opt["access"]))
    return sorted(found)


def json_operations(app: Any) -> set[tuple[str, str]]:
    document = app.openapi_schema.to_schema()
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if "application/json" in operation.get("requestBody", {}).get("content", {})
    }


async def headers_for(conn: asyncpg.Connection, key: bytes, world: w.World, rule: str) -> dict[str, str]:
    """The person's headers; a session of its own for a login-only route (logging out ends it)."""
    person = PERSON[rule]
    if rule != "login":
        return world.headers(person)
    account = await conn.fetchval("SELECT id FROM account WHERE login = $1", person)
    token, _ = await auth.open_session(conn, key, account, 60, None)
    return {"authorization": f"Bearer {token}"}


def named_fields(path: str, response: Any) -> list[str]:
    if path.startswith("/open311/"):
        return [e["description"].split(":", 1)[0] for e in response.json()]
    assert response.headers["content-type"] == "application/problem+json", response.text
    return [e["field"] for e in response.json().get("errors") or []]


@pytest.mark.parametrize("what", BAD_BODIES)
async def test_a_body_no_json_reader_can_use_is_refused_naming_its_field_on_every_write(
    client: AsyncTestClient[Any], conn: asyncpg.Connection, settings: Settings, what: str
) -> None:
    body, field = BAD_BODIES[what]
    world = await w.build(conn, client)
    # wrong guesses are what this sends: none of it may be throttled away (429) before it is read
    app = create_app(msgspec.structs.replace(settings, throttle_failures=100_000))
    json_ops = json_operations(app)
    routes = writes(app)
    assert json_ops <= {(m, p) for m, p, _ in routes} and len(json_ops) >= 20
    answers, wanted = {}, {}
    async with AsyncTestClient(app=app) as own:
        for method, path, rule in routes:
            known = real_path_parameters(world, path)
            url = path.format_map(collections.defaultdict(lambda: "1", known))  # ids the world lacks
            headers = await headers_for(conn, app.state.signing_key, world, rule)
            headers["content-type"] = "application/json"
            response = await own.request(method, url, content=body, headers=headers)
            status = response.status_code
            answers[(method, path)] = status
            if (method, path) in json_ops:
                fields = named_fields(path, response) if status in (400, 422) else []
                answers[(method, path)] = (status, fields)
                # a NUL a text cannot hold is a 422 like any unstorable text; Open311 says 400
                nul = what == "an escaped NUL" and not path.startswith("/open311/")
                wanted[(method, path)] = (422 if nul else 400, [field])
    assert {k: v for k, v in answers.items() if isinstance(v, int) and v >= 500} == {}
    assert {k: answers[k] for k in wanted} == wanted
