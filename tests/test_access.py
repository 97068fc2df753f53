"""Who may do what: every route of the app, against every kind of person, and what leaks.

The matrix is built by enumerating the app's routes, so a route added without a row here fails
the test before anyone has to remember it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient

from merchant_code import access, profiles
from tests import world as w

Call = Callable[[AsyncTestClient[Any], w.World, str], Awaitable[httpx.Response]]


def _all(status: int) -> dict[str, int]:
    return dict.fromkeys(w.ROLES, status)


def _expect(*statuses: int) -> dict[str, int]:
    """Statuses in the order of w.ROLES: anonymous, merchant_a, merchant_b, inspector_in,
    inspector_out, manager, admin."""
    return dict(zip(w.ROLES, statuses, strict=True))


async def _fresh_token(client: AsyncTestClient[Any], role: str) -> dict[str, str]:
    """A second session of the role, for the routes that end one."""
    return {} if role == "anonymous" else {"authorization": f"Bearer {await w.log_in(client, role)}"}


def get(path: str, **headers: str) -> Call:
    async def call(client: AsyncTestClient[Any], world: w.World, role: str) -> httpx.Response:
        url = world.fill(path)
        return await client.get(url, headers=world.headers(role, **headers), follow_redirects=False)

    return call


Body = dict[str, str] | None


def send(method: str, path: str, *, json_body: Body = None, form: Body = None, fresh: bool = False) -> Call:
    async def call(client: AsyncTestClient[Any], world: w.World, role: str) -> httpx.Response:
        headers = await _fresh_token(client, role) if fresh else world.headers(role)
        url = world.fill(path)

        def fill(body: dict[str, str] | None) -> dict[str, str] | None:
            values = {"a": world.shop_a, "b": world.shop_b, "role": role.replace("_", "-")}
            return None if body is None else {k: v.format(**values) for k, v in body.items()}

        return await client.request(
            method, url, headers=headers, json=fill(json_body), data=fill(form), follow_redirects=False
        )

    return call


WRONG_PASSWORD = {"current_password": "not the password", "new_password": "a brand new password"}
WRONG_CLAIM = {"shop_code": "{a}", "claim_code": "AAAA-BBBB-CCCC-DDDD", "phone": "13812341234"}
STAFF_ONLY = _expect(401, 403, 403, 200, 200, 200, 200)
OWNER_ONLY_422 = _expect(401, 422, 404, 403, 403, 403, 403)
OWNER_PAGE = _expect(303, 303, 404, 403, 403, 403, 403)  # anonymous: to the login page
AREA_STAFF_422 = _expect(401, 403, 403, 422, 404, 422, 422)
MANAGERS = _expect(401, 403, 403, 403, 403, 200, 200)
MANAGERS_400 = _expect(401, 403, 403, 403, 403, 400, 400)
AREA_STAFF_PAGE = _expect(303, 403, 403, 303, 404, 303, 303)

# (wrong claims for shop A through the API, for shop B through the page: five per shop are allowed)
# (method, route path as Litestar lists it) -> how to call it, and the status each person gets
MATRIX: dict[tuple[str, str], tuple[Call, dict[str, int]]] = {
    ("GET", "/healthz"): (get("/healthz"), _all(200)),
    # where to look, in demo mode only (tests/test_demo_home.py); nothing is at / otherwise
    ("GET", "/"): (get("/"), _all(404)),
    ("GET", "/readyz"): (get("/readyz"), _all(200)),
    ("GET", "/s/{code:str}"): (get("/s/{a}"), _all(200)),
    ("POST", "/api/v1/auth/login"): (
        send("POST", "/api/v1/auth/login", json_body={"login": "manager", "password": w.PASSWORD}),
        _all(200),
    ),
    ("POST", "/api/v1/auth/logout"): (
        send("POST", "/api/v1/auth/logout", fresh=True),
        _expect(401, 204, 204, 204, 204, 204, 204),
    ),
    ("POST", "/api/v1/auth/password"): (
        send("POST", "/api/v1/auth/password", json_body=WRONG_PASSWORD),
        _expect(401, 422, 422, 422, 422, 422, 422),
    ),
    ("GET", "/api/v1/me"): (get("/api/v1/me"), _expect(401, 200, 200, 200, 200, 200, 200)),
    ("GET", "/login"): (get("/login"), _all(200)),
    ("POST", "/login"): (send("POST", "/login", form={"login": "nobody-{role}", "password": "x"}), _all(401)),
    ("POST", "/logout"): (send("POST", "/logout", fresh=True), _all(303)),  # anonymous: to the login page
    ("GET", "/me"): (get("/me"), _expect(303, 200, 200, 200, 200, 200, 200)),
    ("POST", "/me/password"): (
        send("POST", "/me/password", form=WRONG_PASSWORD),
        _expect(303, 422, 422, 422, 422, 422, 422),
    ),
    ("POST", "/api/v1/claims"): (
        send("POST", "/api/v1/claims", json_body={**WRONG_CLAIM, "login": "newowner", "password": "x" * 12}),
        _expect(401, 401, 401, 409, 409, 409, 409),
    ),
    ("GET", "/claim"): (get("/claim"), _all(200)),
    ("POST", "/claim"): (
        send(
            "POST",
            "/claim",
            form={**WRONG_CLAIM, "shop_code": "{b}", "login": "owner2", "password": "x" * 12},
        ),
        _expect(401, 401, 401, 409, 409, 409, 409),
    ),
    ("GET", "/api/v1/merchant/shops"): (
        get("/api/v1/merchant/shops"),
        _expect(401, 200, 200, 403, 403, 403, 403),
    ),
    ("GET", "/api/v1/merchant/shops/{code:str}"): (
        get("/api/v1/merchant/shops/{a}"),
        _expect(401, 200, 404, 403, 403, 403, 403),
    ),
    ("PATCH", "/api/v1/merchant/shops/{code:str}"): (
        send("PATCH", "/api/v1/merchant/shops/{a}", json_body={"opening_hours": "10:00-22:00"}),
        _expect(401, 200, 404, 403, 403, 403, 403),
    ),
    ("GET", "/api/v1/inspect/shops"): (get("/api/v1/inspect/shops"), STAFF_ONLY),
    ("GET", "/api/v1/inspect/shops/{code:str}"): (
        get("/api/v1/inspect/shops/{a}"),
        _expect(401, 403, 403, 200, 404, 200, 200),
    ),
    ("GET", "/api/v1/accounts"): (get("/api/v1/accounts"), _expect(401, 403, 403, 403, 403, 200, 200)),
    ("GET", "/api/v1/audit"): (get("/api/v1/audit"), _expect(401, 403, 403, 403, 403, 403, 200)),
    # writes: an empty body passes the access and object checks and then fails validation, so
    # every cell shows who was let through (422, or 303 back to the page) and nothing changes
    ("POST", "/api/v1/merchant/shops/{code:str}/licences"): (
        send("POST", "/api/v1/merchant/shops/{a}/licences", json_body={}),
        OWNER_ONLY_422,
    ),
    ("POST", "/api/v1/merchant/shops/{code:str}/staff"): (
        send("POST", "/api/v1/merchant/shops/{a}/staff", json_body={}),
        OWNER_ONLY_422,
    ),
    ("POST", "/api/v1/merchant/shops/{code:str}/honours"): (
        send("POST", "/api/v1/merchant/shops/{a}/honours", json_body={}),
        OWNER_ONLY_422,
    ),
    ("POST", "/s/{code:str}/licences"): (send("POST", "/s/{a}/licences", form={}), OWNER_PAGE),
    ("POST", "/s/{code:str}/staff"): (send("POST", "/s/{a}/staff", form={}), OWNER_PAGE),
    ("POST", "/s/{code:str}/honours"): (send("POST", "/s/{a}/honours", form={}), OWNER_PAGE),
    ("POST", "/s/{code:str}/details"): (send("POST", "/s/{a}/details", form={}), OWNER_PAGE),
    ("POST", "/api/v1/merchant/inspections/{id:str}/reply"): (
        send("POST", "/api/v1/merchant/inspections/{i}/reply", json_body={}),
        OWNER_ONLY_422,
    ),
    ("POST", "/s/{code:str}/inspections/{id:str}/reply"): (
        send("POST", "/s/{a}/inspections/{i}/reply", form={}),
        OWNER_PAGE,
    ),
    ("POST", "/api/v1/inspect/shops/{code:str}/inspections"): (
        send("POST", "/api/v1/inspect/shops/{a}/inspections", json_body={}),
        AREA_STAFF_422,
    ),
    ("POST", "/s/{code:str}/inspections"): (send("POST", "/s/{a}/inspections", form={}), AREA_STAFF_PAGE),
    ("POST", "/api/v1/inspect/submissions/{id:str}"): (
        send("POST", "/api/v1/inspect/submissions/{s}", json_body={}),
        AREA_STAFF_422,
    ),
    ("POST", "/s/{code:str}/submissions/{id:str}"): (
        send("POST", "/s/{a}/submissions/{s}", form={}),
        AREA_STAFF_PAGE,
    ),
    ("GET", "/api/v1/inspect/submissions"): (get("/api/v1/inspect/submissions"), STAFF_ONLY),
    ("GET", "/api/v1/inspect/due"): (get("/api/v1/inspect/due"), STAFF_ONLY),
    ("POST", "/api/v1/shops/{code:str}/complaints"): (
        send("POST", "/api/v1/shops/{a}/complaints", json_body={}),
        _all(422),
    ),
    ("GET", "/s/{code:str}/complaint"): (get("/s/{a}/complaint"), _all(200)),
    ("POST", "/s/{code:str}/complaint"): (send("POST", "/s/{a}/complaint", form={"text": "x"}), _all(422)),
    ("GET", "/track/{number:str}"): (get("/track/{c}"), _all(200)),
    # an open case cannot be reopened, and a reason is needed first
    ("POST", "/track/{number:str}/reopen"): (send("POST", "/track/{c}/reopen", json_body={}), _all(422)),
    ("GET", "/s/{code:str}/sticker.svg"): (get("/s/{a}/sticker.svg"), _all(200)),
    ("GET", "/s/{code:str}/sticker.png"): (get("/s/{a}/sticker.png"), _all(200)),
    ("GET", "/s/{code:str}/poster.svg"): (get("/s/{a}/poster.svg"), _all(200)),
    ("GET", "/.well-known/merchant-code-keys.json"): (get("/.well-known/merchant-code-keys.json"), _all(200)),
    # policy pushes: managers (and admins) within their area; each merchant their own inbox
    ("GET", "/api/v1/manage/policies"): (get("/api/v1/manage/policies"), MANAGERS),
    ("POST", "/api/v1/manage/policies"): (
        send("POST", "/api/v1/manage/policies", json_body={}),
        MANAGERS_400,
    ),
    ("POST", "/api/v1/manage/audience"): (
        send("POST", "/api/v1/manage/audience", json_body={}),
        MANAGERS_400,
    ),
    ("GET", "/api/v1/manage/policies/{policy_id:str}"): (get("/api/v1/manage/policies/{p}"), MANAGERS),
    ("PUT", "/api/v1/manage/policies/{policy_id:str}"): (
        send("PUT", "/api/v1/manage/policies/{p}", json_body={}),
        MANAGERS_400,
    ),
    # the world's policy has gone out: nothing is left to cancel, and a correction needs a text
    ("POST", "/api/v1/manage/policies/{policy_id:str}/cancel"): (
        send("POST", "/api/v1/manage/policies/{p}/cancel"),
        _expect(401, 403, 403, 403, 403, 409, 409),
    ),
    ("POST", "/api/v1/manage/policies/{policy_id:str}/corrections"): (
        send("POST", "/api/v1/manage/policies/{p}/corrections", json_body={}),
        MANAGERS_400,
    ),
    ("GET", "/api/v1/manage/policies/{policy_id:str}/unread.csv"): (
        get("/api/v1/manage/policies/{p}/unread.csv"),
        MANAGERS,
    ),
    ("GET", "/api/v1/merchant/inbox"): (
        get("/api/v1/merchant/inbox"),
        _expect(401, 200, 200, 403, 403, 403, 403),
    ),
    ("GET", "/api/v1/merchant/inbox/{item_id:str}"): (
        get("/api/v1/merchant/inbox/{m}"),
        _expect(401, 200, 404, 403, 403, 403, 403),
    ),
    ("GET", "/inbox"): (get("/inbox"), _expect(303, 200, 200, 403, 403, 403, 403)),
    ("GET", "/inbox/{item_id:str}"): (get("/inbox/{m}"), _expect(303, 200, 404, 403, 403, 403, 403)),
    ("GET", "/manage/policies"): (get("/manage/policies"), _expect(303, 403, 403, 403, 403, 200, 200)),
    ("POST", "/manage/policies"): (
        send("POST", "/manage/policies", form={"title": ""}),
        _expect(303, 403, 403, 403, 403, 422, 422),
    ),
    ("GET", "/manage/policies/{policy_id:str}"): (
        get("/manage/policies/{p}"),
        _expect(303, 403, 403, 403, 403, 200, 200),
    ),
    ("POST", "/manage/policies/{policy_id:str}/cancel"): (
        send("POST", "/manage/policies/{p}/cancel", form={}),
        _expect(303, 403, 403, 403, 403, 303, 303),
    ),
    ("POST", "/manage/policies/{policy_id:str}/corrections"): (
        send("POST", "/manage/policies/{p}/corrections", form={}),
        _expect(303, 403, 403, 403, 403, 303, 303),
    ),
    # cases: staff of the area; the owner of the shop answers; the routing table is the managers'
    ("GET", "/api/v1/cases"): (get("/api/v1/cases"), STAFF_ONLY),
    ("POST", "/api/v1/cases"): (send("POST", "/api/v1/cases", json_body={}), MANAGERS_400),
    ("GET", "/api/v1/cases/{number:str}"): (
        get("/api/v1/cases/{case}"),
        _expect(401, 403, 403, 200, 404, 200, 200),
    ),
    ("POST", "/api/v1/cases/{number:str}/transitions"): (
        send("POST", "/api/v1/cases/{case}/transitions", json_body={}),
        _expect(401, 403, 403, 400, 400, 400, 400),
    ),
    ("GET", "/api/v1/merchant/cases"): (
        get("/api/v1/merchant/cases"),
        _expect(401, 200, 200, 403, 403, 403, 403),
    ),
    ("POST", "/api/v1/merchant/cases/{number:str}/replies"): (
        send("POST", "/api/v1/merchant/cases/{case}/replies", json_body={}),
        OWNER_ONLY_422,
    ),
    ("GET", "/api/v1/manage/routes"): (get("/api/v1/manage/routes"), MANAGERS),
    ("PUT", "/api/v1/manage/routes"): (send("PUT", "/api/v1/manage/routes", json_body={}), MANAGERS_400),
    ("DELETE", "/api/v1/manage/routes/{route_id:str}"): (
        send("DELETE", "/api/v1/manage/routes/00000000-0000-4000-8000-000000000000"),
        _expect(401, 403, 403, 403, 403, 404, 404),
    ),
    ("GET", "/cases"): (get("/cases"), _expect(303, 403, 403, 200, 200, 200, 200)),
    ("GET", "/cases/{number:str}"): (get("/cases/{case}"), _expect(303, 403, 403, 200, 404, 200, 200)),
    ("POST", "/cases/{number:str}/transitions"): (
        send("POST", "/cases/{case}/transitions", form={}),
        _expect(303, 403, 403, 303, 404, 303, 303),
    ),
    ("GET", "/merchant/cases"): (get("/merchant/cases"), _expect(303, 200, 200, 403, 403, 403, 403)),
    ("POST", "/merchant/cases/{number:str}/replies"): (
        send("POST", "/merchant/cases/{case}/replies", form={}),
        _expect(303, 303, 404, 403, 403, 403, 403),
    ),
    # Open311 GeoReport v2: public; filing needs an API key (an empty form has none: 403)
    ("GET", "/open311/v2/discovery.json"): (get("/open311/v2/discovery.json"), _all(200)),
    ("GET", "/open311/v2/services.json"): (get("/open311/v2/services.json"), _all(200)),
    ("GET", "/open311/v2/services/{service_file:str}"): (get("/open311/v2/services/hygiene.json"), _all(200)),
    ("GET", "/open311/v2/requests.json"): (get("/open311/v2/requests.json"), _all(200)),
    ("POST", "/open311/v2/requests.json"): (send("POST", "/open311/v2/requests.json", form={}), _all(403)),
    ("GET", "/open311/v2/requests/{request_file:str}"): (
        get("/open311/v2/requests/SR-WORLD-00001.json"),
        _all(200),
    ),
    ("GET", "/open311/v2/discovery.xml"): (get("/open311/v2/discovery.xml"), _all(200)),
    ("GET", "/open311/v2/services.xml"): (get("/open311/v2/services.xml"), _all(200)),
    ("GET", "/open311/v2/requests.xml"): (get("/open311/v2/requests.xml"), _all(200)),
    ("POST", "/open311/v2/requests.xml"): (send("POST", "/open311/v2/requests.xml", form={}), _all(403)),
    ("GET", "/open311/v2/tokens/{token_file:str}"): (get("/open311/v2/tokens/SR-WORLD-00001.xml"), _all(200)),
    ("GET", "/open311/v2/{document:str}"): (get("/open311/v2/nothing.xml"), _all(404)),
    ("POST", "/open311/v2/{document:str}"): (send("POST", "/open311/v2/nothing.xml", form={}), _all(404)),
    # the supervision dashboard
    ("GET", "/api/v1/dashboard"): (get("/api/v1/dashboard"), MANAGERS),
    ("GET", "/api/v1/dashboard.csv"): (get("/api/v1/dashboard.csv"), MANAGERS),
    ("GET", "/dashboard"): (get("/dashboard"), _expect(303, 403, 403, 403, 403, 200, 200)),
    # the feeds' data-quality report: managers and admins
    ("GET", "/api/v1/manage/feeds/quality"): (get("/api/v1/manage/feeds/quality"), MANAGERS),
    ("GET", "/manage/feeds"): (get("/manage/feeds"), _expect(303, 403, 403, 403, 403, 200, 200)),
    # the public API
    ("GET", "/api/v1/shops"): (get("/api/v1/shops"), _all(200)),
    ("GET", "/api/v1/shops/{code:str}"): (get("/api/v1/shops/{a}"), _all(200)),
    ("GET", "/api/v1/changes"): (get("/api/v1/changes"), _all(200)),
    ("POST", "/api/v1/exports"): (send("POST", "/api/v1/exports", json_body={}), _all(400)),
    ("GET", "/api/v1/exports/{export_id:str}"): (
        get("/api/v1/exports/00000000-0000-0000-0000-000000000000"),
        _all(404),
    ),
    ("GET", "/api/v1/exports/{export_id:str}/download"): (
        get("/api/v1/exports/00000000-0000-0000-0000-000000000000/download"),
        _all(404),
    ),
    # webhook subscriptions: managers inside their area, admins
    ("GET", "/api/v1/manage/webhooks"): (get("/api/v1/manage/webhooks"), MANAGERS),
    ("POST", "/api/v1/manage/webhooks"): (
        send("POST", "/api/v1/manage/webhooks", json_body={}),
        MANAGERS_400,
    ),
    ("DELETE", "/api/v1/manage/webhooks/{name:str}"): (
        send("DELETE", "/api/v1/manage/webhooks/nope"),
        _expect(401, 403, 403, 403, 403, 404, 404),
    ),
}
# Litestar's OpenAPI routes: public, and checked through the document itself
SCHEMA = (get("/schema/openapi.json"), _all(200))


def app_routes(client: AsyncTestClient[Any]) -> list[tuple[str, str]]:
    return sorted(
        (method, route.path)
        for route in client.app.routes
        if isinstance(route, HTTPRoute)
        for method in route.route_handler_map
        if method not in ("OPTIONS", "HEAD")
    )


async def test_every_route_against_every_kind_of_person(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)
    routes = app_routes(client)
    unlisted = [r for r in routes if r not in MATRIX and not r[1].startswith("/schema")]
    assert unlisted == [], "routes without a row in the access matrix"
    mismatches = []
    cells = 0
    for route in routes:
        call, expected = MATRIX.get(route, SCHEMA)
        for role in w.ROLES:
            response = await call(client, world, role)
            cells += 1
            if response.status_code != expected[role]:
                mismatches.append(f"{route} as {role}: {response.status_code}, expected {expected[role]}")
    assert mismatches == [], "\n".join(mismatches)
    assert cells >= len(MATRIX) * len(w.ROLES)


def test_every_route_declares_a_rule(client: AsyncTestClient[Any]) -> None:
    for route in client.app.routes:
        if isinstance(route, HTTPRoute):
            for method, (handler, _) in route.route_handler_map.items():
                if method != "OPTIONS":
                    assert handler.opt.get("access") in access.RULES, (method, route.path)


def test_an_app_with_a_route_without_a_rule_does_not_start(settings: Any) -> None:
    from litestar import get as route

    from merchant_code import app as app_module
    from merchant_code.errors import StartupError

    @route("/forgotten", sync_to_thread=False)
    def forgotten() -> str:
        return "anyone"

    app_module.ROUTES.append(forgotten)
    try:
        with pytest.raises(StartupError, match="GET /forgotten"):
            app_module.create_app(settings)
    finally:
        app_module.ROUTES.remove(forgotten)


# --- leaks --------------------------------------------------------------------------------

SHOP_DATA_ROUTES = [
    "/s/{a}",
    "/api/v1/shops/{a}",
    "/api/v1/shops?q=老王",
    "/api/v1/changes",
    "/s/{a}?lang=en",
    "/api/v1/merchant/shops",
    "/api/v1/merchant/shops/{a}",
    "/api/v1/inspect/shops",
    "/api/v1/inspect/shops/{a}",
    "/api/v1/me",
    "/me",
    "/api/v1/accounts",
    "/api/v1/audit",
]
# who may see shop A's personal data at all: its owner, and staff over it holding pii:read
MAY_SEE_PII = {"merchant_a", "pii_inspector"}


def _forms(value: str) -> list[bytes]:
    """The value as it could appear in a body: raw UTF-8, or JSON-escaped."""
    return [value.encode(), json.dumps(value).strip('"').encode()]


async def test_no_personal_data_reaches_a_view_that_may_not_see_it(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)
    # something in the audit trail that names the shop, so the admin's audit view is exercised
    await client.get(f"/api/v1/inspect/shops/{world.shop_a}", headers=world.headers("pii_inspector"))
    leaks = []
    seen_by_allowed = set()
    for role in (*w.ROLES, "pii_inspector"):
        for path in SHOP_DATA_ROUTES:
            for accept in ("application/json", "text/html"):
                url = path.format(a=world.shop_a)
                response = await client.get(url, headers=world.headers(role, accept=accept))
                for field, value in w.PII.items():
                    if any(form in response.content for form in _forms(value)):
                        if role in MAY_SEE_PII:
                            seen_by_allowed.add((role, field))
                        else:
                            leaks.append(f"{role} sees {field} at {url} ({accept})")
    assert leaks == []
    # and the test can fail: those who may see it do see every value
    assert {f for r, f in seen_by_allowed if r == "merchant_a"} == set(w.PII)
    assert {f for r, f in seen_by_allowed if r == "pii_inspector"} == set(w.PII)


async def test_staff_without_pii_read_see_masked_values(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)
    body = (
        await client.get(f"/api/v1/inspect/shops/{world.shop_a}", headers=world.headers("manager"))
    ).json()
    assert body["pii_masked"] is True
    assert (body["owner_name"], body["owner_phone"]) == ("王*", "138****1234")
    assert body["owner_id_number"] == "310104********1234"
    assert body["staff"][0]["name"] == "赵*"
    assert body["staff"][0]["health_cert_number"] == "JK**************42"


async def test_each_unmasked_read_is_audited(client: AsyncTestClient[Any], conn: asyncpg.Connection) -> None:
    world = await w.build(conn, client)
    for _ in range(2):
        response = await client.get(
            f"/api/v1/inspect/shops/{world.shop_a}", headers=world.headers("pii_inspector")
        )
        assert response.json()["pii_masked"] is False
    await client.get(f"/api/v1/inspect/shops/{world.shop_a}", headers=world.headers("inspector_in"))
    rows = await conn.fetch(
        "SELECT a.login, e.request_id FROM audit_event e JOIN account a ON a.id = e.actor_account_id"
        " WHERE e.action = 'pii.read' AND e.object_id = $1",
        world.shop_a,
    )
    assert [r["login"] for r in rows] == ["pii_inspector", "pii_inspector"]
    assert all(r["request_id"] for r in rows)


async def test_probing_another_shop_says_the_same_as_a_shop_that_does_not_exist(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)
    from merchant_code.codes import new_shop_code

    other = await client.get(f"/api/v1/merchant/shops/{world.shop_b}", headers=world.headers("merchant_a"))
    missing = await client.get(
        f"/api/v1/merchant/shops/{new_shop_code(12345)}", headers=world.headers("merchant_a")
    )
    assert other.status_code == missing.status_code == 404
    assert other.json()["detail"] == missing.json()["detail"]
    assert "李记" not in other.text


# who reported a case, and who handles it, is for the staff of its area alone
REPORTER = {"name": "陈晓明", "phone": "13611112222", "email": "chen@example.cn"}
CASE_ROUTES = [
    "/track/{t}",
    "/open311/v2/requests.json",
    "/open311/v2/requests/{r}.json",
    "/open311/v2/requests.xml",
    "/open311/v2/requests/{r}.xml",
    "/api/v1/merchant/cases",
    "/merchant/cases",
    "/api/v1/cases/{case}",
    "/cases/{case}",
    "/api/v1/shops/{a}",
    "/s/{a}",
]
MAY_SEE_REPORTERS = {"inspector_in", "manager", "admin"}


async def test_no_reporter_or_staff_name_reaches_a_view_that_may_not_see_it(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)
    await conn.execute("UPDATE account SET display_name = '周检查员' WHERE login = 'inspector_in'")
    filed = await client.post(
        f"/api/v1/shops/{world.shop_a}/complaints",
        json={"category": "food_safety", "text": "吃完以后一直拉肚子", **REPORTER},
    )
    number = filed.json()["tracking_number"]
    request_id = filed.json()["request_id"]
    case = await conn.fetchval("SELECT public_id FROM case_file WHERE tracking_number = $1", number)
    moved = await client.post(
        f"/api/v1/cases/{case}/transitions",
        json={"action": "note", "note": "已约谈", "public": True},
        headers=world.headers("inspector_in"),
    )
    assert moved.status_code == 200
    await client.post(
        f"/api/v1/cases/{case}/transitions",
        json={"action": "assign"},
        headers=world.headers("inspector_in"),
    )
    private = {**REPORTER, "staff_login": "inspector_in", "staff_name": "周检查员"}
    leaks, seen = [], set()
    for role in w.ROLES:
        for path in CASE_ROUTES:
            for accept in ("application/json", "text/html"):
                url = path.format(t=number, r=request_id, a=world.shop_a, case=case)
                body = (await client.get(url, headers=world.headers(role, accept=accept))).content
                for field, value in private.items():
                    if any(form in body for form in _forms(value)):
                        if role in MAY_SEE_REPORTERS and path.startswith(("/api/v1/cases", "/cases")):
                            seen.add((role, field))
                        else:
                            leaks.append(f"{role} sees {field} at {url} ({accept})")
    assert leaks == []
    # and the test can fail: the staff of the area do see the reporter and who handles the case
    assert {f for r, f in seen if r == "inspector_in"} >= {"name", "phone", "email", "staff_name"}


# a reporter's tracking number is their proof (it reads the notes meant for them and reopens the
# case): it opens their page, and no other view shows it to anyone
TRACKING_ROUTES = [
    "/track/{t1}",
    "/track/{t2}",
    "/api/v1/cases",
    "/cases",
    "/api/v1/cases/{case}",
    "/cases/{case}",
    "/api/v1/merchant/cases",
    "/merchant/cases",
    "/s/{a}",
    "/api/v1/merchant/shops/{a}",
    "/api/v1/inspect/shops/{a}",
    "/api/v1/shops/{a}",
    "/api/v1/changes",
    "/api/v1/audit",
    "/open311/v2/requests.json",
]


async def test_a_tracking_number_reaches_no_view_but_its_reporters_page(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)
    numbers = []
    for text in ("吃完以后一直拉肚子", "同一家店，我吃完也拉肚子"):  # two reporters, one case
        filed = await client.post(
            f"/api/v1/shops/{world.shop_a}/complaints", json={"category": "food_safety", "text": text}
        )
        assert filed.status_code == 201, filed.text
        numbers.append(filed.json()["tracking_number"])
    staff = world.headers("inspector_in")
    listed = (await client.get("/api/v1/cases?category=food_safety", headers=staff)).json()
    assert [c["reported_count"] for c in listed] == [2]
    case = listed[0]["public_id"]
    # the case moves on and the owner answers, so that every view has the case to show
    for change in ({"action": "assign"}, {"action": "note", "note": "已约谈", "public": True}):
        moved = await client.post(f"/api/v1/cases/{case}/transitions", json=change, headers=staff)
        assert moved.status_code == 200, moved.text
    replied = await client.post(
        f"/api/v1/merchant/cases/{case}/replies", json={"note": "已整改"}, headers=world.headers("merchant_a")
    )
    assert replied.status_code == 201, replied.text
    async with conn.transaction():
        await profiles.rebuild(conn, [world.shop_a_id])
    own = {"/track/{t1}": numbers[0], "/track/{t2}": numbers[1]}
    leaks, shown = [], set()
    for role in (*w.ROLES, "pii_inspector"):
        for path in TRACKING_ROUTES:
            for accept in ("application/json", "text/html"):
                url = path.format(a=world.shop_a, case=case, t1=numbers[0], t2=numbers[1])
                body = (await client.get(url, headers=world.headers(role, accept=accept))).content
                for number in numbers:
                    if any(form in body for form in _forms(number)):
                        if own.get(path) == number:
                            shown.add(number)
                        else:
                            leaks.append(f"{role} sees {number} at {url} ({accept})")
    assert leaks == []
    # and the test can fail: each reporter's page shows their number; the shop sees the case
    assert shown == set(numbers)
    assert case in (await client.get("/merchant/cases", headers=world.headers("merchant_a"))).text
