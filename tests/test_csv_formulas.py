"""Every CSV the service writes opens in a spreadsheet as text: a cell of text that would start a
formula (`=`, `+`, `-`, `@`, a tab or a CR, after any spaces) gets a leading apostrophe, while the
numbers the service writes itself (a score of -1, a western longitude) stay numbers."""

from __future__ import annotations

import csv
import decimal
import io
import zipfile
from pathlib import Path
from typing import Any

import asyncpg
from litestar.testing import AsyncTestClient

from merchant_code import csvsafe, exports, policies
from tests import factories
from tests import world as w
from tests.test_dashboard import MARCH, cases
from tests.test_policies import TZ, _account, district, manager

HOSTILE = [" =1+1", "\t=cmd|' /C calc'!A0", "@SUM(1+1)", "+1", "-1", "  -2+3", "\r=1", '=HYPERLINK("x")']
HARMLESS = ["老王面馆", "1+1", "a=b", "", "'quoted", "SUM(1)", "漕溪北路 -1号"]


def defused(value: str) -> bool:
    return value.startswith("'") and value[1:] in HOSTILE


def test_every_start_of_a_formula_is_defused_and_numbers_are_not() -> None:
    assert all(defused(csvsafe.defuse(v)) for v in HOSTILE)
    assert [csvsafe.defuse(v) for v in HARMLESS] == HARMLESS
    numbers = [-1, -121.4737, decimal.Decimal("-1.5"), csvsafe.Numeral("-1"), 0]
    assert [csvsafe.cell(v) for v in numbers] == numbers
    out = io.StringIO()
    csvsafe.writer(out).writerows([[*HOSTILE, -1, None], HARMLESS])
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert all(defused(v) for v in rows[0][: len(HOSTILE)]) and rows[0][len(HOSTILE) :] == ["-1", ""]
    assert rows[1] == HARMLESS


async def test_the_lives_export_defuses_names_addresses_phones_and_descriptions(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    shops = []
    for i, value in enumerate(HOSTILE):
        shop_id, _ = await factories.shop(conn, name=value)
        await conn.execute(
            "UPDATE shop SET address = $2, phone = $3, lat = 31.2, lon = $4 WHERE id = $1",
            shop_id,
            value,
            value,
            -121.4737 if i == 0 else 121.4737,  # a western longitude stays a number
        )
        inspection_id = await conn.fetchval(
            "INSERT INTO inspection (shop_id, source, external_id, inspected_on, result, score)"
            " VALUES ($1, 'test', $2, '2026-03-02', 'pass', $3) RETURNING id",
            shop_id,
            f"X{i}",
            -1 if i == 0 else 90,
        )
        await conn.execute(
            "INSERT INTO violation (inspection_id, code, description) VALUES ($1, 'V01', $2)",
            inspection_id,
            value,
        )
        shops.append(shop_id)
    await conn.execute("UPDATE area SET name = '=1+1' WHERE code = '310199'")
    requested = await exports.request_export(conn, "310199", "lives")
    assert await exports.run_pending(conn, tmp_path, base_url="https://open.example.org") == 1
    export = await exports.get_export(conn, requested.id)
    assert export is not None and export.path is not None, export
    with zipfile.ZipFile(tmp_path / export.path) as archive:

        def table(name: str) -> list[dict[str, str]]:
            return list(csv.DictReader(io.StringIO(archive.read(name).decode(), newline="")))

        businesses, inspections = table("businesses.csv"), table("inspections.csv")
        violations, info = table("violations.csv"), table("feed_info.csv")
    assert len(businesses) == len(HOSTILE)
    for row in businesses:
        assert defused(row["name"]) and defused(row["address"]) and defused(row["phone_number"]), row
    assert sorted(r["longitude"] for r in businesses) == ["-121.4737"] + ["121.4737"] * (len(HOSTILE) - 1)
    assert sorted(r["score"] for r in inspections) == ["-1.0"] + ["90.0"] * (len(HOSTILE) - 1)
    assert all(defused(r["description"]) for r in violations) and len(violations) == len(HOSTILE)
    assert info[0]["municipality_name"] == "'=1+1"


async def test_the_unread_list_of_a_policy_defuses_names_addresses_and_phones(
    conn: asyncpg.Connection,
) -> None:
    shops = await district(conn)
    await conn.execute(
        "UPDATE shop SET name = $2, address = $3, phone = $4 WHERE id = $1",
        shops["cat1"],
        " =1+1",
        "\t=cmd",
        "+86 138 1234 1234",
    )
    await conn.execute("UPDATE shop SET name = '@SUM(1+1)', phone = NULL WHERE id = $1", shops["cat2"])
    me = manager(account_id=await _account(conn))
    public_id = await policies.create(
        conn,
        me,
        policies.PolicyIn(title="政策", body_md="b", area_codes=["310199"], trades=["catering"]),
        tz=TZ,
    )
    await policies.send_due(conn, TZ)
    await policies.deliver_inbox(conn)
    row = await policies.policy_for(conn, me, public_id)
    text = await policies.unread_csv(conn, row["id"], days=0)
    rows = {r["shop_name"]: r for r in csv.DictReader(io.StringIO(text, newline=""))}
    assert rows["' =1+1"]["address"] == "'\t=cmd" and rows["' =1+1"]["phone"] == "'+86 138 1234 1234"
    assert rows["'@SUM(1+1)"]["phone"] == ""
    assert "cat_grid" in rows  # the others as they are


async def test_the_dashboard_csv_defuses_the_names_of_areas(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)
    await cases(conn)
    await conn.execute("UPDATE area SET name = ' -1+1' WHERE code = '310199001'")
    answer = await client.get(f"/api/v1/dashboard.csv?{MARCH}&group=area", headers=world.headers("manager"))
    assert answer.status_code == 200
    lines = {r["key"]: r for r in csv.DictReader(io.StringIO(answer.content.decode("utf-8-sig"), newline=""))}
    assert lines["310199001"]["name"] == "' -1+1"
    assert lines["310199001"]["opened"].isdigit()  # the figures are numbers still
