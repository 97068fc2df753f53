"""Open data exports: the LIVES zip of the demo district loads back through our own LIVES feed
with nothing lost, the JSON Lines dump holds one public line per shop of the area, the download
route, and one waiting export per area and format however many ask at once."""

from __future__ import annotations

import asyncio
import datetime
import gzip
import hashlib
import io
import json
import os
import uuid
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from litestar.testing import AsyncTestClient

from merchant_code import db, exports, profiles
from merchant_code.district import DISTRICT_CODE, seed_district
from merchant_code.feeds import runner
from merchant_code.scheduler import registered_jobs
from tests import waiting

DAY = datetime.date(2026, 3, 2)
SEED = 11
SUBDISTRICT = f"{DISTRICT_CODE}001"


@pytest.fixture
async def twin_url(server_url: str, template_db: str) -> AsyncIterator[str]:
    """A second fresh, migrated database, for the side that reads the export back."""
    from tests.conftest import _admin, with_database

    name = f"mc_export_twin_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    await _admin(server_url, f"CREATE DATABASE {name} TEMPLATE {template_db}")
    yield with_database(server_url, name)
    await _admin(server_url, f"DROP DATABASE {name} WITH (FORCE)")


async def _inspections(conn: asyncpg.Connection) -> list[tuple[Any, ...]]:
    """Every inspection as the LIVES export carries it: shop, day, result, score, kind, and its
    violations (code, critical, description)."""
    rows = await conn.fetch(
        "SELECT s.uscc, i.inspected_on, i.result, i.score, i.kind,"
        " coalesce((SELECT array_agg(v.code || '|' || v.critical || '|' || v.description ORDER BY v.code)"
        "           FROM violation v WHERE v.inspection_id = i.id), '{}') AS violations"
        " FROM inspection i JOIN shop s ON s.id = i.shop_id"
        " ORDER BY s.uscc, i.inspected_on, i.result, i.score"
    )
    return [tuple(r) for r in rows]


async def _ready(conn: asyncpg.Connection, data_dir: Path, area: str, fmt: exports.Format) -> exports.Export:
    requested = await exports.request_export(conn, area, fmt)
    assert requested.status == "pending"
    assert await exports.run_pending(conn, data_dir, base_url="https://open.example.org") == 1
    export = await exports.get_export(conn, requested.id)
    assert export is not None and export.status == "ready", export
    assert export.path is not None
    body = (data_dir / export.path).read_bytes()
    assert len(body) == export.size and hashlib.sha256(body).hexdigest() == export.sha256
    return export


async def test_the_lives_export_of_the_demo_district_loads_back_through_the_lives_feed_with_nothing_lost(
    conn: asyncpg.Connection, twin_url: str, tmp_path: Path
) -> None:
    seeded = await seed_district(conn, shops=200, seed=SEED, today=DAY)
    assert seeded.inspections > 200 and seeded.violations > 100
    export = await _ready(conn, tmp_path, DISTRICT_CODE, "lives")
    assert export.path is not None
    body = (tmp_path / export.path).read_bytes()
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert sorted(archive.namelist()) == sorted(
            ["businesses.csv", "inspections.csv", "violations.csv", "feed_info.csv"]
        )
        inspections_csv = archive.read("inspections.csv").decode()
        assert inspections_csv.startswith("business_id,date,score,result,description,type\r\n")
        info = archive.read("feed_info.csv").decode().splitlines()
        assert info[0] == "feed_date,feed_version,municipality_name,municipality_url,contact_email"
        feed_date, _, name, url, _ = info[1].split(",")
        assert len(feed_date) == 8 and name == "汇城区" and url == "https://open.example.org"
        assert archive.getinfo("businesses.csv").date_time[0] >= 2026
    assert export.rows == {
        "businesses.csv": 200,
        "inspections.csv": seeded.inspections,
        "violations.csv": seeded.violations,
        "feed_info.csv": 1,
    }
    expected = await _inspections(conn)

    # the same district in a second database, its inspections gone, reads the zip as a LIVES feed
    twin = await db.connect(twin_url)
    try:
        await seed_district(twin, shops=200, seed=SEED, today=DAY)
        await twin.execute("DELETE FROM inspection")
        await twin.execute(
            "INSERT INTO feed_source (kind, name, url, config)"
            " VALUES ('lives', 'open-data', 'http://127.0.0.1:9/lives.zip', $1)",
            {"allow_private": True},
        )
        transport = httpx.MockTransport(
            lambda r: httpx.Response(200, content=body, headers={"content-type": "application/zip"})
        )
        pool = await db.create_pool(twin_url, max_size=4)
        try:
            result = await runner.run_source(pool, "open-data", transport=transport)
        finally:
            await pool.close()
        assert result.status == "ok", result.error
        assert result.counts.quarantined == 0
        assert result.counts.fetched == 200 + seeded.inspections
        assert await twin.fetchval("SELECT count(*) FROM feed_reject") == 0
        assert await twin.fetchval("SELECT count(*) FROM feed_shop_map WHERE matched_by = 'uscc'") == 200
        assert await twin.fetchval("SELECT count(*) FROM violation") == seeded.violations
        assert await _inspections(twin) == expected
    finally:
        await twin.close()


async def test_the_jsonl_export_has_one_public_line_per_shop_of_the_area_and_nothing_private(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await seed_district(conn, shops=80, seed=SEED, today=DAY)
    await conn.execute(
        "UPDATE shop SET owner_name = 'SECRET-OWNER-' || id, owner_phone = 'SECRET-PHONE-' || id,"
        " owner_id_number = 'SECRET-IDNO-' || id"
    )
    await conn.execute(
        "UPDATE staff SET name = 'SECRET-STAFF-' || id, id_number = 'SECRET-STAFF-ID-' || id,"
        " phone = 'SECRET-STAFF-PHONE-' || id, health_cert_number = 'SECRET-CERT-' || id"
    )
    await profiles.rebuild_all(conn, today=DAY)
    # the private values are in the database's other documents: the dump must leave them out
    assert await conn.fetchval("SELECT count(*) FROM shop_profile WHERE private_doc::text LIKE '%SECRET-%'")
    inside = {
        r["code"]
        for r in await conn.fetch(
            "SELECT s.code FROM shop s JOIN area a ON a.id = s.area_id WHERE a.path LIKE $1",
            f"{DISTRICT_CODE}.{SUBDISTRICT}%",
        )
    }
    assert 0 < len(inside) < 80

    export = await _ready(conn, tmp_path, SUBDISTRICT, "jsonl")
    assert export.path is not None
    raw = gzip.decompress((tmp_path / export.path).read_bytes())
    assert b"SECRET-" not in raw
    lines = [json.loads(line) for line in raw.decode().splitlines()]
    assert [line["code"] for line in lines if line["code"] not in inside] == []
    assert sorted(line["code"] for line in lines) == sorted(inside)
    assert export.rows == {"shops": len(inside)}
    for line in lines:
        assert line["area_code"].startswith(SUBDISTRICT)
        assert {"uscc", "name", "address", "trade", "status", "grade", "inspections"} <= line.keys()
        assert not {"owner_name", "owner_phone", "owner_id_number", "staff"} & line.keys()


async def _post(client: AsyncTestClient[Any], **body: Any) -> httpx.Response:
    return await client.post("/api/v1/exports", json=body)


async def test_the_download_waits_for_the_job_then_serves_the_file_with_its_digest(
    client: AsyncTestClient[Any], conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await seed_district(conn, shops=40, seed=SEED, today=DAY)
    asked = await _post(client, area_code=DISTRICT_CODE, format="lives")
    assert asked.status_code == 202, asked.text
    made = asked.json()
    assert made["status"] == "pending" and asked.headers["location"] == made["status_url"]
    assert asked.headers["ratelimit-limit"]  # the public API's rate limit applies
    assert made["status_url"].endswith(f"/api/v1/exports/{made['id']}")
    download = f"/api/v1/exports/{made['id']}/download"
    assert made["download_url"].endswith(download)

    early = await client.get(download)
    assert early.status_code == 409 and early.headers["retry-after"] == str(exports.RETRY_AFTER)
    assert early.headers["content-type"].startswith("application/problem+json")
    status = await client.get(f"/api/v1/exports/{made['id']}")
    assert status.status_code == 200 and status.json()["status"] == "pending"

    assert await exports.run_pending(conn, tmp_path) == 1
    done = (await client.get(f"/api/v1/exports/{made['id']}")).json()
    assert done["status"] == "ready" and done["rows"]["businesses.csv"] == 40
    got = await client.get(download)
    assert got.status_code == 200
    assert got.headers["etag"] == f'"{done["sha256"]}"' == f'"{hashlib.sha256(got.content).hexdigest()}"'
    assert got.headers["content-type"] == "application/zip"
    finished = datetime.datetime.fromisoformat(done["finished_at"]).astimezone(datetime.UTC)
    filename = f"lives-{DISTRICT_CODE}-{finished:%Y%m%d}.zip"
    assert done["filename"] == filename
    assert got.headers["content-disposition"] == f'attachment; filename="{filename}"'
    assert int(got.headers["content-length"]) == done["size"] == len(got.content)
    again = await client.get(download, headers={"if-none-match": got.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert (await client.get(download, headers={"if-none-match": '"other"'})).status_code == 200

    # a fresh ready export is handed out again, not made again
    repeat = await _post(client, area_code=DISTRICT_CODE, format="lives")
    assert repeat.status_code == 200 and repeat.json()["id"] == made["id"]

    for unknown in (f"/api/v1/exports/{uuid.uuid4()}", "/api/v1/exports/not-an-id/download"):
        assert (await client.get(unknown)).status_code == 404
    no_area = await _post(client, area_code="999999", format="lives")
    assert no_area.status_code == 422 and no_area.json()["errors"][0]["field"] == "area_code"
    for bad in (
        {"area_code": DISTRICT_CODE, "format": "xml"},
        {"area_code": "31-01", "format": "lives"},
        {"area_code": DISTRICT_CODE, "format": "lives", "owners": True},
    ):
        refused = await _post(client, **bad)
        assert refused.status_code == 400, refused.text
    assert await conn.fetchval("SELECT count(*) FROM export_file") == 1


async def test_only_one_export_of_an_area_and_format_waits_however_many_ask_at_once(
    client: AsyncTestClient[Any], conn: asyncpg.Connection, db_url: str
) -> None:
    await seed_district(conn, shops=20, seed=SEED, today=DAY)
    other = await db.connect(db_url)
    try:
        first = conn.transaction()
        await first.start()
        mine = await exports.request_export(conn, DISTRICT_CODE, "jsonl")

        async def ask() -> exports.Export:
            async with other.transaction():
                return await exports.request_export(other, DISTRICT_CODE, "jsonl")

        theirs = asyncio.create_task(ask())

        async def held_by_mine() -> bool:
            blockers = await conn.fetchval("SELECT pg_blocking_pids($1)", other.get_server_pid())
            return conn.get_server_pid() in blockers

        await waiting.until(held_by_mine, 10, "the second request to wait on the first")
        assert not theirs.done()  # held by the unique index until the first request ends
        await first.commit()
        assert (await theirs).id == mine.id
    finally:
        await other.close()

    answers = await asyncio.gather(*(_post(client, area_code=SUBDISTRICT, format="lives") for _ in range(6)))
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["id"] for a in answers}) == 1
    rows = await conn.fetch(
        "SELECT a.code, e.format, e.status FROM export_file e JOIN area a ON a.id = e.area_id"
    )
    assert sorted(tuple(r) for r in rows) == [
        (DISTRICT_CODE, "jsonl", "pending"),
        (SUBDISTRICT, "lives", "pending"),
    ]
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute(
            "INSERT INTO export_file (area_id, format) SELECT id, 'jsonl' FROM area WHERE code = $1",
            DISTRICT_CODE,
        )
    assert any(job.id == "exports-run" and job.func is exports.run_job for job in registered_jobs())


async def test_a_failed_run_says_so_and_a_run_silent_for_an_hour_is_taken_over(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await seed_district(conn, shops=10, seed=SEED, today=DAY)
    first = await exports.request_export(conn, DISTRICT_CODE, "jsonl")
    not_a_folder = tmp_path / "data"
    not_a_folder.write_text("a file where the data folder should be")
    assert await exports.run_pending(conn, not_a_folder) == 1
    failed = await exports.get_export(conn, first.id)
    assert failed is not None and failed.status == "failed" and failed.error

    second = await exports.request_export(conn, DISTRICT_CODE, "jsonl")
    assert second.id != first.id and second.status == "pending"
    # claimed by a worker that died: left alone for an hour, then taken over
    await conn.execute(
        "UPDATE export_file SET status = 'running', started_at = now() - interval '5 minutes' WHERE id = $1",
        second.id,
    )
    assert await exports.run_pending(conn, tmp_path) == 0
    await conn.execute(
        "UPDATE export_file SET started_at = now() - interval '2 hours' WHERE id = $1", second.id
    )
    assert await exports.run_pending(conn, tmp_path) == 1
    done = await exports.get_export(conn, second.id)
    assert done is not None and done.status == "ready" and done.rows == {"shops": 10}
    assert sorted(p.name for p in (tmp_path / "exports").iterdir()) == [f"{second.id}.jsonl.gz"]


async def test_a_replaced_export_is_deleted_a_week_later_and_its_download_says_so(
    client: AsyncTestClient[Any], conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await seed_district(conn, shops=10, seed=SEED, today=DAY)
    first = (await _post(client, area_code=DISTRICT_CODE, format="jsonl")).json()
    await exports.run_pending(conn, tmp_path)
    # a day later a new export is made, not the old one handed out
    await conn.execute("UPDATE export_file SET finished_at = finished_at - interval '2 days'")
    second = (await _post(client, area_code=DISTRICT_CODE, format="jsonl")).json()
    assert second["id"] != first["id"]
    await exports.run_pending(conn, tmp_path)
    old_file = tmp_path / "exports" / f"{first['id']}.jsonl.gz"
    new_file = tmp_path / "exports" / f"{second['id']}.jsonl.gz"
    folder = tmp_path / "exports"
    stray, recent, temporary = folder / "left-by-a-crash.zip", folder / "just-written.zip", folder / ".x.part"
    for path in (stray, recent, temporary):
        path.write_bytes(b"x")
    os.utime(stray, (0, 0))
    os.utime(temporary, (0, 0))

    # within the week both stay, and the old link still works
    assert await exports.expire(conn, tmp_path) == 1  # only the stray file
    assert old_file.is_file() and new_file.is_file() and not stray.exists()
    assert recent.exists() and temporary.exists()
    assert (await client.get(f"/api/v1/exports/{first['id']}/download")).status_code == 200

    await conn.execute(
        "UPDATE export_file SET finished_at = finished_at - interval '8 days' WHERE id = $1", second["id"]
    )
    await conn.execute(
        "UPDATE export_file SET finished_at = finished_at - interval '9 days' WHERE id = $1", first["id"]
    )
    assert await exports.expire(conn, tmp_path) == 1
    assert not old_file.exists() and new_file.is_file()
    assert (await client.get(f"/api/v1/exports/{first['id']}")).json()["status"] == "expired"
    gone = await client.get(f"/api/v1/exports/{first['id']}/download")
    assert gone.status_code == 410 and "newer export" in gone.json()["detail"]
    assert (await client.get(f"/api/v1/exports/{second['id']}/download")).status_code == 200
    assert await exports.expire(conn, tmp_path) == 0  # the newest is never replaced
