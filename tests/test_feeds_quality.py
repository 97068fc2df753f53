"""The data-quality report per source: each measure on a crafted history, the demo's drifting LIVES
publisher pulled over loopback HTTP, the case raised once, the CLI, the API and the page."""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import zipfile
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from merchant_code import db
from merchant_code.district import seed_district
from merchant_code.feeds import provider as demo
from merchant_code.feeds import quality, quality_cases, runner
from merchant_code.feeds.quality_shape import schema_changes, shape_of
from merchant_code.scheduler import registered_jobs
from tests import cli, factories
from tests import world as w
from tests.test_feeds_provider import Clock, LoopbackOnly

SEED = 7
BUCKET = 120
START = datetime.datetime(2026, 5, 1, 9, 0, tzinfo=datetime.UTC)
NOW = datetime.datetime(2026, 6, 1, 12, 0, tzinfo=datetime.UTC)


def measure(report: quality.SourceReport, name: str) -> quality.Measure:
    return next(m for m in report.measures if m.name == name)


# ---------------------------------------------------------------------------------------- shapes


def test_a_pages_shape_is_sniffed_from_zip_csv_json_and_xml() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(
            "feed/Inspections.csv", "\ufeffBusiness_ID, Score ,date,result\nB1,92,20230314,Pass\nB2,,NULL,\n"
        )
        archive.writestr("feed_info.csv", "feed_date\n2023-10-01\n")
    assert shape_of(buffer.getvalue()) == {
        "inspections.csv": {"business_id": "text", "score": "integer", "date": "date", "result": "text"},
        "feed_info.csv": {"feed_date": "date"},
    }
    assert shape_of(b"business_id,score\nB1,91.5\nB2,90\n") == {
        "csv": {"business_id": "text", "score": "decimal"}
    }
    fhrs = {"meta": {"totalCount": 2}, "establishments": [
        {"FHRSID": 1, "RatingValue": "5", "scores": {"Hygiene": 0}, "Geocode": None},
        {"FHRSID": 2, "RatingValue": "Exempt", "scores": {"Hygiene": 5}, "Geocode": None},
    ]}  # fmt: skip
    assert shape_of(json.dumps(fhrs).encode()) == {
        "json": {"FHRSID": "integer", "RatingValue": "text", "scores.Hygiene": "integer", "Geocode": "empty"}
    }
    rss = b"<rss><channel><title>x</title><item><title>a</title><pubDate>Mon</pubDate></item></channel></rss>"
    assert shape_of(rss) == {"xml": {"title": "text", "pubDate": "text"}}
    # a DOCTYPE is refused before anything is expanded; nothing that is not a feed has a shape
    assert shape_of(b'<!DOCTYPE x [<!ENTITY a "b">]><rss><item><t>&a;</t></item></rss>') == {}
    assert shape_of(b"PK\x03\x04 not a zip") == {} and shape_of(b"") == {}


def test_schema_changes_name_what_appeared_vanished_and_changed_type() -> None:
    old = {"inspections.csv": {"business_id": "text", "score": "integer", "type": "text", "result": "empty"}}
    new = {
        "inspections.csv": {
            "business_id": "text",
            "score": "text",
            "inspection_type": "text",
            "result": "text",
        }
    }
    assert schema_changes(old, new) == {
        "appeared": ["inspections.csv: inspection_type"],
        "vanished": ["inspections.csv: type"],
        "changed": ["inspections.csv: score (integer -> text)"],
    }
    assert schema_changes(old, old) == {}


# ------------------------------------------------------------------------------- crafted history


async def lives_source(conn: asyncpg.Connection, name: str = "city-lives", config: str = "{}") -> int:
    source_id: int = await conn.fetchval(
        "INSERT INTO feed_source (kind, name, url, config, interval_seconds, last_success_at)"
        " VALUES ('lives', $1, 'http://127.0.0.1:9/lives.zip', $2::jsonb, 3600, $3) RETURNING id",
        name, json.loads(config), NOW - datetime.timedelta(hours=1),
    )  # fmt: skip
    return source_id


async def past_run(
    conn: asyncpg.Connection, source_id: int, at: datetime.datetime, fetched: int, quarantined: int = 0,
    shape: dict[str, Any] | None = None, status: str = "ok",
) -> None:  # fmt: skip
    await conn.execute(
        "INSERT INTO feed_run (source_id, started_at, finished_at, status, fetched, inserted, quarantined,"
        " shape)"
        " VALUES ($1, $2::timestamptz, $2::timestamptz + interval '1 minute', $3, $4, $5, $6, $7)",
        source_id, at, status, fetched, fetched - quarantined, quarantined, shape,
    )  # fmt: skip


async def inspection(
    conn: asyncpg.Connection, shop_id: int, n: int, *, day: datetime.date, score: float | None,
    result: str | None, fetched: datetime.datetime, source: str = "city-lives",
) -> None:  # fmt: skip
    # the result stays known where the table does not allow it unknown yet: the score carries it
    await conn.execute(
        "INSERT INTO inspection (shop_id, source, external_id, inspected_on, kind, score, result, fetched_at)"
        " VALUES ($1, $2, $3, $4, 'routine', $5, $6, $7)",
        shop_id, source, f"I{n}", day, score, result or "pass", fetched,
    )  # fmt: skip


async def test_coverage_freshness_duplicates_and_quarantine_on_a_crafted_history(
    conn: asyncpg.Connection,
) -> None:
    shops = [(await factories.shop(conn, name=f"店{i}"))[0] for i in range(10)]
    await factories.shop(conn, name="关门店", status="closed")  # not an active shop: not counted
    source_id = await lives_source(conn)
    # four of the ten active shops inspected; shop 0's visit of May 3 twice under two ids
    day = datetime.date(2026, 5, 1)
    for n, shop in enumerate(shops[:4]):
        await inspection(conn, shop, n, day=day + datetime.timedelta(days=n), score=90, result="pass",
                         fetched=NOW - datetime.timedelta(days=3))  # fmt: skip
    await inspection(
        conn, shops[0], 9, day=day, score=90, result="pass", fetched=NOW - datetime.timedelta(days=3)
    )
    # the mapping counts too: a fifth shop is known to the source though none of its records is in yet
    await conn.execute(
        "INSERT INTO feed_shop_map (source_id, business_id, shop_id, matched_by)"
        " VALUES ($1, 'B5', $2, 'manual')",
        source_id, shops[4],
    )  # fmt: skip
    run_at = NOW - datetime.timedelta(hours=1)
    await past_run(conn, source_id, run_at, fetched=10, quarantined=4)
    await conn.execute(
        "INSERT INTO feed_reject (run_id, last_run_id, source_id, external_id, record_key, raw, reason)"
        " SELECT (SELECT max(id) FROM feed_run), (SELECT max(id) FROM feed_run), $1, 'x' || n, 'x' || n,"
        " 'raw', r"
        " FROM unnest(ARRAY['no shop in the register matches this record',"
        " 'no shop in the register matches this"
        " record', 'no shop in the register matches this record', 'bad date']) WITH ORDINALITY AS u(r, n)",
        source_id,
    )  # fmt: skip

    [report] = await quality.build(conn, "city-lives", now=NOW)
    cover = measure(report, "coverage")
    assert cover.ok is True and cover.value == pytest.approx(0.5), cover  # 5 of 10
    assert measure(report, "duplicates").value == pytest.approx(1 / 5)
    assert measure(report, "duplicates").ok is False
    quarantined = measure(report, "quarantine")
    assert quarantined.value == pytest.approx(0.4) and quarantined.ok is False
    assert [(q.reason, q.count) for q in report.quarantine] == [
        ("no shop in the register matches this record", 3), ("bad date", 1),
    ]  # fmt: skip
    pull = measure(report, "pull_gap")
    assert pull.ok is True and pull.value == pytest.approx(1.0)
    # the newest record is of May 4; the records came a day apart: 28 days is past 10x that
    record = measure(report, "record_gap")
    assert record.ok is False and record.value is not None and 27 < record.value < 30, record
    assert report.department == "food_safety" and set(report.failing) == {
        "duplicates",
        "quarantine",
        "record_gap",
    }

    # seven hours without a good pull of an hourly source: past 3x its interval
    later = await quality.build(conn, "city-lives", now=NOW + datetime.timedelta(hours=6))
    assert measure(later[0], "pull_gap").ok is False and measure(later[0], "pull_gap").value == pytest.approx(
        7.0
    )
    # the thresholds are the source's own, over the defaults
    await conn.execute(
        "UPDATE feed_source"
        " SET config = '{\"quality\": {\"min_coverage\": 0.6, \"max_duplicate_share\": 0.25}}'"
        " WHERE id = $1", source_id,
    )  # fmt: skip
    [own] = await quality.build(conn, "city-lives", now=NOW)
    assert measure(own, "coverage").ok is False and measure(own, "duplicates").ok is True


async def test_value_drift_scores_shifted_scale_inverted_and_unknowns_rising(
    conn: asyncpg.Connection,
) -> None:
    shops = [(await factories.shop(conn, name=f"店{i}"))[0] for i in range(5)]
    source_id = await lives_source(conn)
    old, new = NOW - datetime.timedelta(days=10), NOW - datetime.timedelta(minutes=30)
    await past_run(conn, source_id, old, fetched=40)
    await past_run(conn, source_id, new - datetime.timedelta(minutes=1), fetched=20)
    day = datetime.date(2026, 5, 1)
    # history: passes score high, fails low
    for n in range(40):
        passed = n % 4 != 0
        await inspection(conn, shops[n % 5], n, day=day + datetime.timedelta(days=n),
                         score=90 + n % 10 if passed else 40 + n % 10, result="pass" if passed else "fail",
                         fetched=old)  # fmt: skip
    # the last pull: the publisher's scale turned over, and half its scores are missing
    for n in range(40, 60):
        passed = n % 4 != 0
        await inspection(conn, shops[n % 5], n, day=day + datetime.timedelta(days=n),
                         score=(None if n % 2 else (10 - n % 10 if passed else 60 - n % 10)),
                         result="pass" if passed else "fail", fetched=new)  # fmt: skip
    [report] = await quality.build(conn, "city-lives", now=NOW)
    shift, scale, unknowns = (measure(report, m) for m in ("score_shift", "scale", "unknowns"))
    # every recent score lies below 61, where only the history's fails (a quarter) lie
    assert shift.ok is False and shift.value == pytest.approx(0.75), shift
    assert scale.ok is False and scale.value is not None and scale.value < -0.9, scale
    assert unknowns.ok is False and unknowns.value == pytest.approx(0.5), unknowns
    assert sum(report.histogram.before) == 40 and sum(report.histogram.now) == 10

    # FHRS points: lower is better by the kind's default, so the same numbers read the other way
    await conn.execute("UPDATE feed_source SET kind = 'fhrs' WHERE id = $1", source_id)
    [points] = await quality.build(conn, "city-lives", now=NOW)
    assert measure(points, "scale").ok is True


async def test_too_little_data_is_not_judged(conn: asyncpg.Connection) -> None:
    await lives_source(conn)
    [report] = await quality.build(conn, now=NOW)
    assert report.ok and report.failing == []
    judged = {m.name: m.ok for m in report.measures}
    assert judged["score_shift"] is None and judged["duplicates"] is None and judged["quarantine"] is None
    assert judged["coverage"] is None  # no active shops at all


# -------------------------------------------------------------------- the demo's drifting source


async def pulled_at(conn: asyncpg.Connection, at: datetime.datetime) -> None:
    """The runner stamps a good pull with the database's clock; the provider's is the test's."""
    await conn.execute("UPDATE feed_source SET last_success_at = $1 WHERE last_success_at IS NOT NULL", at)


async def pull(pool: asyncpg.Pool, name: str) -> runner.RunResult:
    async with LoopbackOnly() as transport:
        return await runner.run_source(pool, name, transport=transport, deadline=60)


async def test_the_demo_lives_publisher_drifts_and_its_report_and_case_show_it(
    db_url: str, conn: asyncpg.Connection
) -> None:
    await seed_district(conn, shops=400, seed=SEED, today=START.date())
    clock = Clock(START)
    epoch = START - datetime.timedelta(seconds=60 * BUCKET)
    provider = demo.start(
        await demo.load_shops(conn),
        SEED,
        bucket_seconds=BUCKET,
        epoch=epoch,
        now=clock,
        drift_after=4 * BUCKET,
    )
    pool = await db.create_pool(db_url, max_size=4)
    try:
        sources = demo.demo_sources(provider.base_url)
        await demo.register(conn, sources)
        for _ in range(2):
            for s in sources:
                assert (await pull(pool, s.name)).status == "ok", s.name
            await pulled_at(conn, clock.at)
            # from the first pull on: a shape that never states a result (the LIVES file with
            # only the required columns) has no rise of unknowns to report
            first = await quality.build(conn, now=clock.at)
            assert [r.source for r in first if "unknowns" in r.failing] == [], first
            clock.at += datetime.timedelta(seconds=3 * BUCKET)
        last_pull = clock.at - datetime.timedelta(seconds=3 * BUCKET)
        reports = {r.source: r for r in await quality.build(conn, now=last_pull)}
        # every demo source has its report; before the drift shows, none fails
        assert set(reports) == {s.name for s in sources}
        assert [r.failing for r in reports.values() if not r.ok] == [], reports
        shape = await conn.fetchval(
            "SELECT shape FROM feed_run r JOIN feed_source s ON s.id = r.source_id"
            " WHERE s.name = 'demo-lives' ORDER BY r.id DESC LIMIT 1"
        )
        assert shape["inspections.csv"]["score"] == "integer" and "type" in shape["inspections.csv"]
        assert set(shape) == {"businesses.csv", "inspections.csv", "violations.csv", "feed_info.csv"}

        clock.at += datetime.timedelta(seconds=25 * BUCKET)  # the drifted inspections arrive
        assert (await pull(pool, "demo-lives")).status == "ok"
        await pulled_at(conn, clock.at)
        [lives] = await quality.build(conn, "demo-lives", now=clock.at)
        # the renamed column: its values went unknown, so every stored inspection of another kind
        # than routine changed in this pull too (which blurs the pull's scores)
        assert "schema" in lives.failing, lives.measures
        assert lives.schema == {
            "appeared": ["inspections.csv: inspection_type"], "vanished": ["inspections.csv: type"],
        }  # fmt: skip
        # the next pull: inverted scores alone (a quarter of the shops publish in this shape)
        clock.at += datetime.timedelta(seconds=80 * BUCKET)
        assert (await pull(pool, "demo-lives")).status == "ok"
        await pulled_at(conn, clock.at)
        [lives] = await quality.build(conn, "demo-lives", now=clock.at)
        assert {"scale", "score_shift"} <= set(lives.failing), lives.measures
        assert measure(lives, "schema").ok is True

        # the scheduled job raises one case for the food safety division, and not again while open
        # (it judges by the real clock, by which every demo source is long overdue: they get theirs)
        state = SimpleNamespace(pool=pool, settings=SimpleNamespace(timezone="Asia/Shanghai"))
        await quality_cases.quality_job(state)
        await quality_cases.quality_job(state)
        cases = await conn.fetch(
            "SELECT c.public_id, c.department, c.shop_id, c.status, c.area_path, c.description"
            " FROM case_file c"
            " JOIN feed_source s ON s.id = c.feed_source_id"
            " WHERE c.category = 'data_quality' AND s.name = 'demo-lives'"
        )
        assert len(cases) == 1, cases
        case = cases[0]
        assert (case["department"], case["shop_id"], case["status"]) == ("food_safety", None, "open")
        assert "demo-lives" in case["description"] and "scale" in case["description"]
        again = await quality_cases.check(conn, clock.at, "demo-lives")
        assert [(r.case_number, r.opened) for r in again] == [(case["public_id"], False)]
        # resolved and closed, a source still failing gets a new case
        await conn.execute("UPDATE case_file SET status = 'closed' WHERE public_id = $1", case["public_id"])
        fresh = await quality_cases.check(conn, clock.at, "demo-lives")
        assert fresh[0].opened and fresh[0].case_number != case["public_id"]
    finally:
        await pool.close()
        provider.stop()


def test_the_quality_job_is_scheduled() -> None:
    assert "feeds-quality" in {j.id for j in registered_jobs()}


# ---------------------------------------------------------------------------- CLI, API and page


async def failing_source(conn: asyncpg.Connection) -> int:
    shop_id, _ = await factories.shop(conn)
    source_id = await lives_source(conn)
    await past_run(conn, source_id, NOW - datetime.timedelta(hours=1), fetched=10, quarantined=8)
    for n in range(2):  # one visit under two ids
        await inspection(
            conn, shop_id, n, day=datetime.date(2026, 5, 1), score=90, result="pass", fetched=NOW
        )
    return source_id


async def test_feeds_quality_prints_a_block_per_source_and_raises_its_case_once(
    db_url: str, conn: asyncpg.Connection
) -> None:
    await failing_source(conn)
    await conn.execute(
        "INSERT INTO feed_source (kind, name, url) VALUES ('rss', 'city-news', 'http://127.0.0.1:9/news.rss')"
    )
    printed = await asyncio.to_thread(cli.run, db_url, "feeds", "quality")
    assert printed.returncode == 0, printed.stderr
    out = printed.stdout
    assert "city-lives (lives, owner food_safety): FAILING: " in out, out
    assert "city-news (rss, owner consumer): ok" in out, out
    assert "  FAIL duplicates" in out and "  FAIL quarantine" in out and "  ok   coverage" in out, out
    assert "case CS-" in out and " opened" in out
    number = out.split("case ", 1)[1].split()[0]
    again = await asyncio.to_thread(cli.run, db_url, "feeds", "quality", "city-lives")
    assert again.returncode == 0 and f"case {number} already open" in again.stdout, again.stdout
    assert "city-news" not in again.stdout
    assert await conn.fetchval("SELECT count(*) FROM case_file WHERE category = 'data_quality'") == 1
    unknown = await asyncio.to_thread(cli.run, db_url, "feeds", "quality", "nothing-here")
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1 and "nothing-here" in unknown.stderr
    bad = await asyncio.to_thread(
        cli.run, db_url, "feeds", "add", "x", "--kind", "lives", "--url", "http://127.0.0.1:9/l.zip",
        "--allow-private", "--config", '{"quality": {"min_coverage": "lots"}}',
    )  # fmt: skip
    assert bad.returncode != 0 and "quality" in bad.stderr and "Traceback" not in bad.stderr


async def test_managers_see_the_report_and_its_case_others_do_not(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)
    await failing_source(conn)
    got = await client.get("/api/v1/manage/feeds/quality", headers=world.headers("manager"))
    assert got.status_code == 200, got.text
    [body] = [r for r in got.json() if r["source"] == "city-lives"]
    assert set(body["failing"]) >= {"duplicates", "quarantine"} and body["department"] == "food_safety"
    one = await client.get("/api/v1/manage/feeds/quality?source=city-lives", headers=world.headers("admin"))
    assert [r["source"] for r in one.json()] == ["city-lives"]
    missing = await client.get("/api/v1/manage/feeds/quality?source=nope", headers=world.headers("admin"))
    assert missing.status_code == 404 and missing.headers["content-type"].startswith(
        "application/problem+json"
    )
    for role in ("merchant_a", "inspector_in"):
        denied = await client.get("/api/v1/manage/feeds/quality", headers=world.headers(role))
        assert denied.status_code == 403, role
    page = await client.get("/manage/feeds", headers=world.headers("manager"))
    assert page.status_code == 200 and "数据源质量" in page.text and "不达标" in page.text
    assert "<svg" in page.text and "<script" not in page.text
    english = await client.get("/manage/feeds?lang=en", headers=world.headers("manager"))
    assert "Feed data quality" in english.text and "FAILING" in english.text
    # the case about the source: in the manager's list and on its page, without a shop
    raised = await quality_cases.check(conn, NOW)
    number = next(r.case_number for r in raised if r.source == "city-lives")
    listed = await client.get("/api/v1/cases?category=data_quality", headers=world.headers("manager"))
    assert [c["public_id"] for c in listed.json()] == [number]
    shown = await client.get(f"/cases/{number}", headers=world.headers("manager"))
    assert shown.status_code == 200 and "city-lives" in shown.text
    detail = await client.get(f"/api/v1/cases/{number}", headers=world.headers("manager"))
    assert detail.status_code == 200 and detail.json()["shop_code"] is None
    assert detail.json()["department"] == "food_safety"
