"""Matching on every identifier a format carries, pulled through the runner over loopback HTTP:
FHRS LocalAuthorityBusinessID as a USCC or a licence number in the API and both bulk-file shapes,
a LIVES business_id that is a licence number."""

from __future__ import annotations

import asyncio
import datetime
import io
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import msgspec
import pytest

from merchant_code import db
from merchant_code.codes import new_shop_code
from merchant_code.feeds import mapping as feed_mapping
from merchant_code.feeds import runner
from tests import cli, factories, loopback_files

FHRS = Path(__file__).parent / "fixtures" / "feeds" / "fhrs"


class Files(dict[str, tuple[bytes, str]]):
    """What the loopback server answers: path -> (body, content type); changeable while it runs."""

    base = ""


@pytest.fixture
def files() -> Iterator[Files]:
    served = Files()

    def answer(path: str) -> loopback_files.Answer:
        return (200, *served[path]) if path in served else (404, b"not here", "text/plain")

    with loopback_files.serving(answer) as base:
        served.base = base
        yield served


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    made = await db.create_pool(db_url, max_size=4)
    yield made
    await made.close()


async def source(conn: asyncpg.Connection, kind: str, name: str, url: str) -> None:
    await conn.execute(
        "INSERT INTO feed_source (kind, name, url, config) VALUES ($1, $2, $3, $4)",
        kind,
        name,
        url,
        {"allow_private": True},
    )


async def shop_with(conn: asyncpg.Connection, *, uscc: str | None = None, name: str = "老王面馆") -> int:
    shop_id, _ = await factories.shop(conn, name=name)
    if uscc is not None:
        await conn.execute("UPDATE shop SET uscc = $2 WHERE id = $1", shop_id, uscc)
    return shop_id


async def licence(
    conn: asyncpg.Connection, shop_id: int, number: str, valid_to: datetime.date | None = None
) -> None:
    await conn.execute(
        "INSERT INTO licence (shop_id, source, external_id, kind, number, valid_to)"
        " VALUES ($1, 'registry', $2, 'food_business', $3, $4)",
        shop_id,
        f"{number}@{shop_id}",
        number,
        valid_to,
    )


async def mapping(conn: asyncpg.Connection, name: str) -> dict[str, tuple[int, str]]:
    rows = await conn.fetch(
        "SELECT m.business_id, m.shop_id, m.matched_by FROM feed_shop_map m"
        " JOIN feed_source s ON s.id = m.source_id WHERE s.name = $1",
        name,
    )
    return {r["business_id"]: (r["shop_id"], r["matched_by"]) for r in rows}


async def inspections(conn: asyncpg.Connection, name: str) -> dict[str, int]:
    rows = await conn.fetch("SELECT external_id, shop_id FROM inspection WHERE source = $1", name)
    return {r["external_id"]: r["shop_id"] for r in rows}


async def test_fhrs_establishments_match_on_their_local_authority_business_id_in_every_shape(
    conn: asyncpg.Connection, pool: asyncpg.Pool, files: Files
) -> None:
    by_uscc = await shop_with(conn, uscc="92310199MA1FL0A1XR")
    by_licence = await shop_with(conn)
    await licence(conn, by_licence, "JY13101990000002")
    # the same number on an expired licence of another shop: the live licence names the shop
    expired = await shop_with(conn)
    long_ago = datetime.date.today() - datetime.timedelta(days=400)
    await licence(conn, expired, "JY13101990000002", valid_to=long_ago)
    by_reference = await shop_with(conn)
    await licence(conn, by_reference, "25/00313/FOOD")
    api = {
        "establishments": [
            {
                "FHRSID": 4001,
                # as a person types it: lower case, spaces
                "LocalAuthorityBusinessID": " 92310199ma1fl0a1xr ",
                "BusinessName": "Harbour Noodles",
                "RatingValue": "4",
                "RatingDate": "2025-01-02T00:00:00",
                "scores": {"Hygiene": 5, "Structural": 5, "ConfidenceInManagement": 5},
            }
        ],
        "meta": {"totalPages": 1, "pageNumber": 1},
    }
    files["/Establishments"] = (msgspec.json.encode(api), "application/json")
    files["/FHRS999en-GB.json"] = ((FHRS / "bulk.json").read_bytes(), "application/json")
    files["/FHRS999en-GB.xml"] = ((FHRS / "bulk.xml").read_bytes(), "text/xml")
    for name, path in (("fhrs-api", "/Establishments"), ("fhrs-json", "/FHRS999en-GB.json"),
                       ("fhrs-xml", "/FHRS999en-GB.xml")):  # fmt: skip
        await source(conn, "fhrs", name, files.base + path)
        result = await runner.run_source(pool, name, deadline=60)
        assert result.status == "ok", (name, result.error)

    assert await mapping(conn, "fhrs-api") == {"4001": (by_uscc, "uscc")}
    assert await inspections(conn, "fhrs-api") == {"4001|2025-01-02T00:00:00": by_uscc}
    for name in ("fhrs-json", "fhrs-xml"):
        assert await mapping(conn, name) == {
            "3001": (by_uscc, "uscc"),
            "3002": (by_licence, "licence_number"),
            "3003": (by_reference, "licence_number"),
        }, name
        assert await inspections(conn, name) == {
            "3001|2025-03-14T00:00:00": by_uscc,
            "3003|2024-11-05T00:00:00": by_reference,
        }, name
    reasons = await conn.fetch("SELECT reason FROM feed_reject ORDER BY id")
    assert not [r for r in reasons if r["reason"].startswith("no shop")]


def lives_zip(businesses: str, inspections: str) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("businesses.csv", businesses)
        z.writestr("inspections.csv", inspections)
        z.writestr(
            "feed_info.csv",
            "feed_date,feed_version,municipality_name,municipality_url,contact_email\n20250401,1,汇城区,,\n",
        )
    return out.getvalue()


async def test_a_lives_business_id_that_is_a_licence_number_matches_its_shop_and_never_a_shared_one(
    conn: asyncpg.Connection, pool: asyncpg.Pool, files: Files
) -> None:
    licensed = await shop_with(conn, name="汇城小吃")
    await licence(conn, licensed, "JY13101990000009")
    # one live number on two shops' licences names neither
    first, second = await shop_with(conn), await shop_with(conn)
    await licence(conn, first, "JY13101990000010")
    await licence(conn, second, "JY13101990000010")
    files["/lives.zip"] = (
        lives_zip(
            "business_id,name,address\nJY13101990000009,另一个名字,别的路1号\nJY13101990000010,某店,某路2号\n",
            "business_id,score,date,result\nJY13101990000009,92,20250301,Pass\nJY13101990000010,80,20250302,Pass\n",
        ),
        "application/zip",
    )
    await source(conn, "lives", "city", files.base + "/lives.zip")
    result = await runner.run_source(pool, "city", deadline=60)
    assert result.status == "ok", result.error

    assert await mapping(conn, "city") == {"JY13101990000009": (licensed, "licence_number")}
    assert await inspections(conn, "city") == {"JY13101990000009|2025-03-01|1": licensed}
    waiting = await conn.fetch("SELECT external_id, reason FROM feed_reject ORDER BY id")
    assert [(r["external_id"], r["reason"]) for r in waiting] == [
        ("JY13101990000010", "no shop in the register matches this business"),
        ("JY13101990000010|2025-03-02|1", "no shop in the register matches this record"),
    ]


async def test_feeds_unmatched_lists_what_waits_and_feeds_map_lands_it_at_the_next_pull(
    db_url: str, conn: asyncpg.Connection, files: Files, tmp_path: Path
) -> None:
    dragon_id, dragon = await factories.shop(conn, name="Golden Dragon Restaurant")
    garden_id, garden = await factories.shop(conn, name="茶社")
    other_id, other = await factories.shop(conn, name="其他")
    await conn.execute("UPDATE shop SET address = '1 Other Street' WHERE id = $1", dragon_id)
    await conn.execute("UPDATE shop SET address = '9 Garden Lane' WHERE id = $1", garden_id)

    def establishment(fhrsid: int, name: str, address: str) -> dict[str, object]:
        return {"FHRSID": fhrsid, "BusinessName": name, "AddressLine1": address, "RatingValue": "5",
                "RatingDate": f"2025-02-0{fhrsid % 10}T00:00:00"}  # fmt: skip

    body = {
        "establishments": [
            establishment(5001, "Golden Dragon", "88 River Road"),
            establishment(5002, "Tea Corner", "9 Garden Lane"),
            establishment(5003, "Nowhere Cafe", "77 Nowhere"),
        ],
        "meta": {"totalPages": 1},
    }
    files["/Establishments"] = (msgspec.json.encode(body), "application/json")
    added = await asyncio.to_thread(
        cli.run, db_url, "feeds", "add", "uk", "--kind", "fhrs", "--url", files.base + "/Establishments",
        "--allow-private",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    ran = await asyncio.to_thread(cli.run, db_url, "feeds", "run", "uk")
    assert ran.returncode == 0 and "quarantined 6" in ran.stdout, (ran.stdout, ran.stderr)

    listed = await asyncio.to_thread(cli.run, db_url, "feeds", "unmatched", "uk")
    assert listed.returncode == 0, listed.stderr
    out = listed.stdout
    assert "uk: 3 business(es) wait for a shop" in out
    assert "5001  Golden Dragon, 88 River Road  (2 record(s) waiting)" in out
    assert f"best candidate: {dragon} Golden Dragon Restaurant, 1 Other Street (similar name)" in out
    assert f"map it: merchant-code feeds map uk 5001 {dragon}" in out
    assert f"best candidate: {garden} 茶社, 9 Garden Lane (same address)" in out
    assert "5003  Nowhere Cafe, 77 Nowhere  (2 record(s) waiting)\n    no candidate shop" in out

    mapped = await asyncio.to_thread(cli.run, db_url, "feeds", "map", "uk", "5001", dragon.lower())
    assert mapped.returncode == 0, mapped.stderr
    assert f"uk: 5001 -> {dragon} (Golden Dragon Restaurant)" in mapped.stdout
    assert "2 record(s) waiting in quarantine for these businesses land at the next pull" in mapped.stdout
    event = await conn.fetchrow("SELECT action, object_id, detail FROM audit_event ORDER BY id DESC LIMIT 1")
    assert (event["action"], event["object_id"]) == ("feed.map", "uk")
    assert event["detail"]["external_id"] == "5001" and event["detail"]["shop_code"] == dragon

    again = await asyncio.to_thread(cli.run, db_url, "feeds", "run", "uk")
    assert again.returncode == 0, again.stderr
    assert await inspections(conn, "uk") == {"5001|2025-02-01T00:00:00": dragon_id}
    assert (await mapping(conn, "uk"))["5001"] == (dragon_id, "manual")
    listed = await asyncio.to_thread(cli.run, db_url, "feeds", "unmatched", "uk")
    assert "uk: 2 business(es) wait" in listed.stdout and "5001" not in listed.stdout

    # a file with one bad line changes nothing, and names the line
    nowhere = new_shop_code()
    bad = tmp_path / "bad.csv"
    bad.write_text(f"external_id,shop_code\n5002,{garden}\n5003,{nowhere}\n")
    refused = await asyncio.to_thread(cli.run, db_url, "feeds", "map", "uk", "--csv", str(bad))
    assert refused.returncode == 2, (refused.stdout, refused.stderr)
    assert refused.stderr.strip().count("\n") == 0 and "line 3" in refused.stderr
    assert f"no shop has the code {nowhere}" in refused.stderr and "Traceback" not in refused.stderr
    assert "5002" not in await mapping(conn, "uk")

    good = tmp_path / "good.csv"
    # a BOM, header case, CRLF, a column more: as spreadsheets write them
    rows = f"5002,by hand,{garden}\r\n5003,,{other}\r\n5001,moved,{other}\r\n"
    good.write_text("\ufeffExternal_ID,note,Shop_Code\r\n" + rows)
    applied = await asyncio.to_thread(cli.run, db_url, "feeds", "map", "uk", "--csv", str(good))
    assert applied.returncode == 0, applied.stderr
    assert f"uk: 5001 -> {other} (其他), replacing {dragon}" in applied.stdout
    assert await mapping(conn, "uk") == {
        "5001": (other_id, "manual"),
        "5002": (garden_id, "manual"),
        "5003": (other_id, "manual"),
    }
    assert await conn.fetchval("SELECT count(*) FROM audit_event WHERE action = 'feed.map'") == 4


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["map", "nothing-here", "5001", "CODE"], "no feed source is named 'nothing-here'"),
        (["map", "uk", "5001", "NOT-A-CODE"], "shop code 'NOT-A-CODE'"),
        (["map", "uk", "5001"], "give EXTERNAL_ID SHOP_CODE, or --csv FILE"),
        (["map", "uk", "5001", "X", "--csv", "f.csv"], "not both"),
        (["map", "uk", "--csv", "/nonexistent/f.csv"], "cannot read /nonexistent/f.csv"),
        (["unmatched", "nothing-here"], "no feed source is named 'nothing-here'"),
        (["unmatched", "uk", "--limit", "0"], "--limit must be at least 1"),
    ],
)
async def test_bad_arguments_to_map_and_unmatched_are_one_line_and_exit_2(
    db_url: str, conn: asyncpg.Connection, args: list[str], says: str
) -> None:
    await source(conn, "fhrs", "uk", "http://127.0.0.1:9/Establishments")
    done = await asyncio.to_thread(cli.run, db_url, "feeds", *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert says in done.stderr and done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "line 1 must be a header naming external_id and shop_code"),
        ("5001,{code}\n", "line 1 must be a header"),
        ("external_id,shop_code\n", "no mappings after the header"),
        ("external_id,shop_code\n5001,{code}\n5002\n", "line 3: 1 fields, the header has 2"),
        ("external_id,shop_code\n5001,{code}\n5001,{code}\n", "line 3: external id '5001' is mapped"),
        ("external_id,shop_code\n,{code}\n", "line 2: external id must be"),
        ('external_id,shop_code\n"5001,{code}\n', "line 2"),
    ],
)
async def test_a_malformed_mapping_file_is_refused_whole_naming_its_line(
    db_url: str, conn: asyncpg.Connection, tmp_path: Path, text: str, says: str
) -> None:
    await source(conn, "fhrs", "uk", "http://127.0.0.1:9/Establishments")
    _, code = await factories.shop(conn)
    path = tmp_path / "map.csv"
    path.write_text(text.format(code=code))
    done = await asyncio.to_thread(cli.run, db_url, "feeds", "map", "uk", "--csv", str(path))
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert says in done.stderr and done.stderr.strip().count("\n") == 0, done.stderr
    assert await conn.fetchval("SELECT count(*) FROM feed_shop_map") == 0


async def test_a_business_with_only_a_position_gets_the_nearest_shop_within_300_m(
    conn: asyncpg.Connection, pool: asyncpg.Pool, files: Files
) -> None:
    near_id, near = await factories.shop(conn, name="街角")
    far_id, _ = await factories.shop(conn, name="远处")
    await conn.execute("UPDATE shop SET lat = 31.19330, lon = 121.43720 WHERE id = $1", near_id)
    await conn.execute("UPDATE shop SET lat = 31.30000, lon = 121.50000 WHERE id = $1", far_id)
    body = {
        "establishments": [
            {"FHRSID": 6001, "geocode": {"longitude": "121.4371", "latitude": "31.1932"}},
            {"FHRSID": 6002, "geocode": {"longitude": "121.0", "latitude": "31.0"}},
        ]
    }
    files["/Establishments"] = (msgspec.json.encode(body), "application/json")
    await source(conn, "fhrs", "uk", files.base + "/Establishments")
    assert (await runner.run_source(pool, "uk", deadline=60)).status == "ok"
    total, waiting = await feed_mapping.unmatched(conn, "uk", limit=10)
    assert total == 2
    assert {(w.business_id, w.candidate_code, w.why) for w in waiting} == {
        ("6001", near, "nearby"),
        ("6002", None, None),
    }
