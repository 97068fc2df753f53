"""Matching on every identifier a format carries, pulled through the runner over loopback HTTP:
FHRS LocalAuthorityBusinessID as a USCC or a licence number in the API and both bulk-file shapes,
a LIVES business_id that is a licence number."""

from __future__ import annotations

import datetime
import http.server
import io
import threading
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import msgspec
import pytest

from merchant_code import db
from merchant_code.feeds import runner
from tests import factories

FHRS = Path(__file__).parent / "fixtures" / "feeds" / "fhrs"


class Files(dict[str, tuple[bytes, str]]):
    """What the loopback server answers: path -> (body, content type); changeable while it runs."""

    base = ""


@pytest.fixture
def files() -> Iterator[Files]:
    served = Files()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body, kind = served.get(self.path.split("?")[0], (b"not here", "text/plain"))
            self.send_response(200 if self.path.split("?")[0] in served else 404)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    served.base = f"http://127.0.0.1:{server.server_address[1]}"
    yield served
    server.shutdown()
    server.server_close()


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
