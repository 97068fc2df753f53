"""The supervision dashboard: exact figures from cases with known timings, per department and per
area, inside the caller's scope and period only; the same figures as CSV and on the page; bad
parameters refused naming the field; only managers and admins let in.

The cases (March 2025, Asia/Shanghai; hours are to the resolution, else to the closing):

    F1 food_safety  310199.310199001                03-01 00:00  resolved 10 h
    F2 food_safety  310199.310199001                03-03 09:00  closed (resolved 20 h, closed 30 h)
    F3 food_safety  310199.310199001                03-04 09:00  closed 40 h (never marked resolved)
    F4 food_safety  310199.310199001                03-05 12:00  open again, overdue, reopened once
    F5 food_safety  310199.310199001.310199001001   03-06 09:00  resolved 100 h, overdue, reopened once
    P1 pricing      310199.310199002                03-10 09:00  resolved 5 h
    P2 pricing      310199.310199002.310199002001   03-11 09:00  assigned
    P3 pricing      310199.310199002                03-12 09:00  in progress, overdue
    I1 pricing      310199.310199002                03-31 23:59  open (the last minute of the period)
    N1 (none)       310199                          03-15 09:00  closed 8 h (the district's own level)
    X1 food_safety  310188.310188001                03-20 09:00  resolved 50 h (another district)
    Z1 consumer     (no area)                       03-25 09:00  open
    O1 food_safety  310199.310199001                02-28 23:59  resolved 1 h (before the period)
    O2 food_safety  310199.310199001                04-01 00:00  resolved 1 h (after: `to` is 03-31)
"""

from __future__ import annotations

import csv
import datetime
import io
import itertools
import re
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from litestar.testing import AsyncTestClient

from merchant_code import dashboard
from tests import factories
from tests import world as w

TZ = ZoneInfo("Asia/Shanghai")
MARCH = "from=2025-03-01&to=2025-03-31"
_ids = itertools.count(1)


def at(month: int, day: int, hour: int = 9, minute: int = 0) -> datetime.datetime:
    return datetime.datetime(2025, month, day, hour, minute, tzinfo=TZ)


async def case(
    conn: asyncpg.Connection,
    opened: datetime.datetime,
    department: str | None,
    area_path: str | None,
    status: str = "open",
    *,
    resolved_h: float | None = None,
    closed_h: float | None = None,
    overdue: bool = False,
    reopened: int = 0,
) -> None:
    def later(hours: float | None) -> datetime.datetime | None:
        return None if hours is None else opened + datetime.timedelta(hours=hours)

    await conn.execute(
        "INSERT INTO case_file (public_id, source, category, department, area_path, status, opened_at,"
        " resolved_at, closed_at, overdue, reopened_count)"
        " VALUES ($1, 'complaint', 'hygiene', $2, $3, $4, $5, $6, $7, $8, $9)",
        f"TS-DASH-{next(_ids):05d}",
        department,
        area_path,
        status,
        opened,
        later(resolved_h),
        later(closed_h),
        overdue,
        reopened,
    )


SUB1 = "310199.310199001"
SUB2 = "310199.310199002"


async def cases(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "INSERT INTO area (parent_id, level, code, path, name, name_en) VALUES"
        " ((SELECT id FROM area WHERE code = '310199001'), 'grid', '310199001001',"
        "  '310199.310199001.310199001001', '一网格', 'Grid one')"
    )
    outer = await conn.fetchval(
        "INSERT INTO area (level, code, path, name, name_en)"
        " VALUES ('district', '310188', '310188', '外区', 'Outer district') RETURNING id"
    )
    await conn.execute(
        "INSERT INTO area (parent_id, level, code, path, name) VALUES ($1, 'subdistrict', '310188001',"
        " '310188.310188001', '外区一街道')",
        outer,
    )
    await case(conn, at(3, 1, 0), "food_safety", SUB1, "resolved", resolved_h=10)
    await case(conn, at(3, 3), "food_safety", SUB1, "closed", resolved_h=20, closed_h=30)
    await case(conn, at(3, 4), "food_safety", SUB1, "closed", closed_h=40)
    await case(conn, at(3, 5, 12), "food_safety", SUB1, "open", overdue=True, reopened=1)
    grid = SUB1 + ".310199001001"
    await case(conn, at(3, 6), "food_safety", grid, "resolved", resolved_h=100, overdue=True, reopened=1)
    await case(conn, at(3, 10), "pricing", SUB2, "resolved", resolved_h=5)
    await case(conn, at(3, 11), "pricing", SUB2 + ".310199002001", "assigned")
    await case(conn, at(3, 12), "pricing", SUB2, "in_progress", overdue=True)
    await case(conn, at(3, 31, 23, 59), "pricing", SUB2, "open")
    await case(conn, at(3, 15), None, "310199", "closed", closed_h=8)
    await case(conn, at(3, 20), "food_safety", "310188.310188001", "resolved", resolved_h=50)
    await case(conn, at(3, 25), "consumer", None, "open")
    await case(conn, at(2, 28, 23, 59), "food_safety", SUB1, "resolved", resolved_h=1)
    await case(conn, at(4, 1, 0), "food_safety", SUB1, "resolved", resolved_h=1)


def figures(row: dict[str, Any]) -> tuple[Any, ...]:
    keys = ("opened", "closed", "overdue", "overdue_open", "reopened", "median_hours", "p90_hours")
    return (*(row[k] for k in keys), row["reopen_rate"])


# (opened, closed, overdue, overdue_open, reopened, median h, p90 h, reopen rate)
FOOD = (5, 4, 2, 1, 2, 30.0, 82.0, 0.4)  # hours 10 20 40 100; reopened 2 of 5 ever resolved
PRICING = (4, 1, 1, 1, 0, 5.0, 5.0, 0.0)
NO_DEPT = (1, 1, 0, 0, 0, 8.0, 8.0, 0.0)
NOTHING = (0, 0, 0, 0, 0, None, None, None)
# hours 5 8 10 20 40 100: median (10 + 20) / 2, p90 40 + 0.5 * 60; reopened 2 of 7 ever resolved
DISTRICT = (10, 6, 3, 2, 2, 15.0, 70.0, 0.2857)
SUB1_OWN = (4, 3, 1, 1, 1, 20.0, 36.0, 0.25)  # F1-F4: hours 10 20 40, p90 20 + 0.8 * 20
GRID1 = (1, 1, 1, 0, 1, 100.0, 100.0, 1.0)  # F5


async def get_json(client: AsyncTestClient[Any], path: str, headers: dict[str, str]) -> dict[str, Any]:
    answer = await client.get(path, headers=headers)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def by_key(body: dict[str, Any]) -> dict[str | None, tuple[Any, ...]]:
    return {r["key"]: figures(r) for r in body["rows"]}


async def test_a_district_manager_sees_exact_figures_per_department_and_per_area(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)
    await cases(conn)
    manager = world.headers("manager")

    body = await get_json(client, f"/api/v1/dashboard?{MARCH}&group=department", manager)
    assert body["group"] == "department"
    assert body["period"]["from"] == "2025-03-01" and body["period"]["to"] == "2025-03-31"
    assert body["period"]["days"] == 31 and body["period"]["timezone"] == "Asia/Shanghai"
    assert body["scope"] == {"code": "310199", "name": "汇城区", "name_en": "汇城区"}
    assert by_key(body) == {
        "consumer": NOTHING,  # Z1 has no area: outside every manager's scope
        "enforcement": NOTHING,
        "food_safety": FOOD,  # not X1 (another district), not O1 / O2 (outside the period)
        "licensing": NOTHING,
        "pricing": PRICING,
        None: NO_DEPT,
    }
    names = {r["key"]: (r["name"], r["name_en"]) for r in body["rows"]}
    assert names["food_safety"] == ("食品安全监管科", "Food safety division")
    assert names[None] == ("未分派部门", "No department")
    assert figures(body["total"]) == DISTRICT
    assert body["total"]["key"] is None and body["total"]["total"] is True

    body = await get_json(client, f"/api/v1/dashboard?{MARCH}&group=area", manager)
    assert [r["key"] for r in body["rows"]] == ["310199", "310199001", "310199002"]
    assert by_key(body) == {"310199": NO_DEPT, "310199001": FOOD, "310199002": PRICING}
    names = {r["key"]: (r["name"], r["own_level"]) for r in body["rows"]}
    assert names == {
        "310199": ("汇城区（本级）", True),
        "310199001": ("一街道", False),
        "310199002": ("二街道", False),
    }
    assert figures(body["total"]) == DISTRICT


async def test_a_subdistrict_manager_sees_only_that_subdistrict(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)
    await cases(conn)
    await factories.account(conn, "mgr1", "manager", area_code="310199001")
    mgr1 = {"authorization": f"Bearer {await w.log_in(client, 'mgr1')}"}

    body = await get_json(client, f"/api/v1/dashboard?{MARCH}", mgr1)  # department by default
    assert body["group"] == "department" and body["scope"]["code"] == "310199001"
    rows = by_key(body)
    assert rows["food_safety"] == FOOD and rows["pricing"] == NOTHING and None not in rows
    assert figures(body["total"]) == FOOD

    body = await get_json(client, f"/api/v1/dashboard?{MARCH}&group=area", mgr1)
    assert by_key(body) == {"310199001": SUB1_OWN, "310199001001": GRID1}
    assert [r["name_en"] for r in body["rows"]] == ["一街道 (itself)", "Grid one"]
    assert figures(body["total"]) == FOOD
    assert world.tokens  # the world's own accounts are not needed here


async def test_an_admin_sees_every_district_and_the_cases_without_an_area(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)
    await cases(conn)
    admin = world.headers("admin")
    body = await get_json(client, f"/api/v1/dashboard?{MARCH}&group=area", admin)
    assert body["scope"] is None
    rows = by_key(body)
    assert rows["310199"] == DISTRICT
    assert rows["310188"] == (1, 1, 0, 0, 0, 50.0, 50.0, 0.0)
    assert rows[None] == (1, 0, 0, 0, 0, None, None, None)  # Z1: nothing resolved, no rate
    assert {r["key"]: r["name_en"] for r in body["rows"]} == {
        "310188": "Outer district",
        "310199": "汇城区",
        None: "No area recorded",
    }
    assert body["total"]["opened"] == 12
    body = await get_json(client, f"/api/v1/dashboard?{MARCH}&group=department", admin)
    rows = by_key(body)
    assert rows["food_safety"][:2] == (6, 5) and rows["consumer"][:2] == (1, 0)


async def test_the_period_counts_its_days_in_the_regulators_time_zone(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)
    await cases(conn)
    manager = world.headers("manager")
    # 03-01 .. 03-05 (included): F1 (03-01 00:00 local, still 02-28 in UTC) to F4 (03-05 12:00)
    body = await get_json(client, "/api/v1/dashboard?from=2025-03-01&to=2025-03-05", manager)
    assert by_key(body)["food_safety"] == (4, 3, 1, 1, 1, 20.0, 36.0, 0.25)
    assert body["total"]["opened"] == 4
    # O2 opened 04-01 00:00 local (03-31 in UTC): April's, not March's
    body = await get_json(client, "/api/v1/dashboard?from=2025-04-01&to=2025-04-01", manager)
    assert by_key(body)["food_safety"][:2] == (1, 1) and body["total"]["opened"] == 1
    # nothing in the period: zeros, no figure made up
    body = await get_json(client, "/api/v1/dashboard?from=2024-01-01&to=2024-01-31&group=area", manager)
    assert figures(body["total"]) == NOTHING
    assert by_key(body) == {"310199001": NOTHING, "310199002": NOTHING}


async def test_the_default_period_is_the_last_30_days(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)
    today = datetime.datetime.now(TZ).date()
    await case(conn, datetime.datetime.now(TZ) - datetime.timedelta(hours=1), "licensing", SUB1)
    await case(conn, datetime.datetime.now(TZ) - datetime.timedelta(days=31), "licensing", SUB1)
    body = await get_json(client, "/api/v1/dashboard", world.headers("manager"))
    assert body["period"]["to"] == today.isoformat()
    assert body["period"]["from"] == (today - datetime.timedelta(days=29)).isoformat()
    assert body["period"]["days"] == 30
    assert by_key(body)["licensing"][0] == 1  # not the case of 31 days ago


async def test_the_csv_has_the_same_figures(client: AsyncTestClient[Any], conn: asyncpg.Connection) -> None:
    world = await w.build(conn, client)
    await cases(conn)
    manager = world.headers("manager")
    answer = await client.get(f"/api/v1/dashboard.csv?{MARCH}&group=area", headers=manager)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    assert answer.content.startswith("\ufeff".encode())
    disposition = answer.headers["content-disposition"]
    assert disposition == 'attachment; filename="dashboard-area-2025-03-01_2025-03-31.csv"'
    lines = list(csv.DictReader(io.StringIO(answer.content.decode("utf-8-sig"))))
    assert list(lines[0]) == list(dashboard.CSV_COLUMNS)
    table = {
        r["key"]: (
            int(r["opened"]),
            int(r["closed"]),
            int(r["overdue"]),
            int(r["overdue_open"]),
            int(r["reopened"]),
            float(r["median_hours"]) if r["median_hours"] else None,
            float(r["p90_hours"]) if r["p90_hours"] else None,
            float(r["reopen_rate"]) if r["reopen_rate"] else None,
        )
        for r in lines
    }
    assert table == {"310199": NO_DEPT, "310199001": FOOD, "310199002": PRICING, "total": DISTRICT}
    assert {r["key"]: r["name"] for r in lines}["310199001"] == "一街道"
    assert all(r["group"] == "area" and r["from"] == "2025-03-01" and r["to"] == "2025-03-31" for r in lines)


async def test_the_page_shows_the_chart_and_the_numbers(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)
    await cases(conn)
    page = await client.get(f"/dashboard?{MARCH}&group=department", headers=world.headers("manager"))
    assert page.status_code == 200, page.text
    html = page.text
    assert '<html lang="zh-CN">' in html and "监管看板" in html
    assert html.count("<svg") == 2 and '<title id="cases-title">' in html and '<desc id="cases-desc">' in html
    assert 'role="img"' in html and 'aria-labelledby="cases-title cases-desc"' in html
    # the totals
    for ident, value in (
        ("opened", "10"),
        ("closed", "6"),
        ("overdue", "3"),
        ("median", "15"),
        ("p90", "70"),
    ):
        assert f'id="total-{ident}"' in html and f">{value}</dd>" in html, ident
    assert 'id="total-reopen">28.6%</dd>' in html
    # the food safety division's bar, read out as its numbers
    assert "食品安全监管科: 新增 5 · 办结 4 · 超期 2（未结 1）" in html
    assert "中位 30 小时 · P90 82 小时" in html
    assert 'data-key="food_safety"' in html and "<td>30</td><td>82</td><td>40.0%</td>" in html
    assert "dashboard.csv?from=2025-03-01&amp;to=2025-03-31&amp;group=department" in html

    english = await client.get(f"/dashboard?{MARCH}&group=area&lang=en", headers=world.headers("admin"))
    assert english.status_code == 200
    assert '<html lang="en">' in english.text and "Supervision dashboard" in english.text
    assert "Outer district: 1 opened · 1 closed · 0 overdue (0 open)" in english.text


BAD = [
    ("from=2025-03-31&to=2025-03-01", "from"),
    ("from=2024-01-01&to=2025-01-01", "from"),  # 367 days
    ("from=2025-13-01", "from"),
    ("to=yesterday", "to"),
    ("group=shop", "group"),
]


async def test_bad_parameters_are_refused_naming_the_field(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)
    manager = world.headers("manager")
    for query, field in BAD:
        for path in ("/api/v1/dashboard", "/api/v1/dashboard.csv"):
            answer = await client.get(f"{path}?{query}", headers=manager)
            assert answer.status_code == 422, answer.text
            assert answer.headers["content-type"].startswith("application/problem+json")
            assert [e["field"] for e in answer.json()["errors"]] == [field], answer.text
        page = await client.get(f"/dashboard?{query}", headers=manager)
        assert page.status_code == 422, query
        assert 'role="alert"' in page.text
        assert re.search(f'id="{field}"[^>]*aria-invalid="true"', page.text), query


async def test_a_full_year_is_allowed(client: AsyncTestClient[Any], conn: asyncpg.Connection) -> None:
    world = await w.build(conn, client)
    await cases(conn)
    body = await get_json(
        client, "/api/v1/dashboard?from=2024-04-01&to=2025-03-31", world.headers("manager")
    )  # 365 days
    assert body["period"]["days"] == 365 and body["total"]["opened"] == 11  # O1 too
    body = await get_json(client, "/api/v1/dashboard?from=2024-04-01&to=2025-04-01", world.headers("manager"))
    assert body["period"]["days"] == 366


async def test_only_managers_and_admins_get_in(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)
    for role in w.ROLES:
        expected_api = {"anonymous": 401, "manager": 200, "admin": 200}.get(role, 403)
        for path in ("/api/v1/dashboard", "/api/v1/dashboard.csv"):
            answer = await client.get(path, headers=world.headers(role))
            assert answer.status_code == expected_api, (role, path)
        page = await client.get("/dashboard", headers=world.headers(role), follow_redirects=False)
        assert page.status_code == {"anonymous": 303}.get(role, expected_api), role
        if role == "anonymous":
            assert page.headers["location"] == "/login?next=/dashboard"
