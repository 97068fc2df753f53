"""The profile: every part of the portrait, rebuilt from a dirty queue, never from a writer."""

from __future__ import annotations

import datetime
from typing import Any

import asyncpg
import pytest

from merchant_code import db, profiles
from tests import factories
from tests.heartbeat import busy, heartbeat
from tests.waiting import scaled

DAY = datetime.timedelta(days=1)


async def profile(conn: asyncpg.Connection, shop_id: int) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT * FROM shop_profile WHERE shop_id = $1", shop_id)
    assert row is not None
    return row


async def test_writes_mark_the_profile_dirty_and_the_drain_rebuilds_it(
    conn: asyncpg.Connection, today: datetime.date
) -> None:
    shop_id, code = await factories.shop(conn)
    assert await conn.fetchval("SELECT count(*) FROM profile_dirty WHERE shop_id = $1", shop_id) == 1
    assert await profiles.drain(conn) == 1
    first = await profile(conn, shop_id)
    assert first["code"] == code and first["citizen_doc"]["licences"] == []

    await factories.licence(conn, shop_id, kind="food_business", valid_to=today + 10 * DAY)
    assert await conn.fetchval("SELECT count(*) FROM profile_dirty") == 1  # marked, not rebuilt by the writer
    assert (await profile(conn, shop_id))["version"] == first["version"]
    await profiles.drain(conn)
    second = await profile(conn, shop_id)
    assert second["version"] == first["version"] + 1
    assert second["citizen_doc"]["licences"] == [
        {"kind": "food_business", "state": "expiring", "valid_to": str(today + 10 * DAY)}
    ]


async def test_the_portrait_has_every_part_and_the_risk_says_why(
    conn: asyncpg.Connection, today: datetime.date
) -> None:
    shop_id, _ = await factories.shop(conn)
    await factories.licence(conn, shop_id, kind="business", valid_to=None)
    await factories.licence(conn, shop_id, kind="food_business", valid_to=today - DAY)
    await factories.inspection(conn, shop_id, on=today - 400 * DAY, grade="A")
    await conn.execute(
        "INSERT INTO inspection (shop_id, source, external_id, inspected_on, result, grade, rectify_due)"
        " VALUES ($1, 'test', 'late', $2, 'rectify', 'C', $3)",
        shop_id,
        today - 40 * DAY,
        today - 10 * DAY,
    )
    await conn.execute(
        "INSERT INTO violation (inspection_id, code, description, critical)"
        " SELECT id, 'V05', '餐饮具未按规定清洗消毒', true FROM inspection WHERE external_id = 'late'"
    )
    for rating in (5, 5, 4):
        await factories.review(conn, shop_id, rating)
    await profiles.drain(conn)
    row = await profile(conn, shop_id)
    doc = row["citizen_doc"]
    assert (row["grade"], row["grade_date"]) == ("C", today - 40 * DAY)
    assert doc["grade"] == "C"
    assert doc["inspections"][0]["violations"][0]["code"] == "V05"
    assert doc["inspections"][0]["violations"][0]["description_en"].startswith("Tableware")
    assert (doc["rating"], doc["review_count"]) == (4.7, 3)
    assert {lic["kind"]: lic["state"] for lic in doc["licences"]} == {
        "business": "valid",
        "food_business": "expired",
    }
    reasons = {r["code"]: r["points"] for r in row["risk_reasons"]}
    assert reasons == {
        "licence_expired": 25,
        "last_inspection_rectify": 15,
        "rectification_overdue": 20,
        "grade_c": 10,
    }
    assert row["risk_score"] == 70
    assert set(doc["freshness"]) >= {"shop", "licences", "inspections", "reviews"}
    # the citizen document has no personal data; the merchant and full documents add it
    assert "owner_name" not in doc and "staff" not in doc
    read = await db.queries.get_full_profile(conn, code=row["code"])
    assert read["citizen_doc"] == doc
    assert read["merchant_doc"]["owner_name"] == "王伟" and read["merchant_doc"]["grade"] == "C"
    assert read["full_doc"]["risk_score"] == 70 and "risk_score" not in read["merchant_doc"]
    assert {r["code"] for r in read["full_doc"]["risk_reasons"]} == set(reasons)
    # the private inspections (with scores and summaries) replace the citizen's shorter list
    assert "score" in read["merchant_doc"]["inspections"][0] and "score" not in doc["inspections"][0]


async def test_rebuild_all_does_every_shop_and_empties_the_queue(conn: asyncpg.Connection) -> None:
    for n in range(7):
        await factories.shop(conn, name=f"店{n}")
    total, _ = await profiles.rebuild_all(conn, batch=3)
    assert total == 7
    assert await conn.fetchval("SELECT count(*) FROM shop_profile") == 7
    assert await conn.fetchval("SELECT count(*) FROM profile_dirty") == 0


async def test_draining_on_several_connections_rebuilds_each_dirty_shop_once(
    db_url: str, conn: asyncpg.Connection
) -> None:
    ids = [(await factories.shop(conn, name=f"店{n}"))[0] for n in range(23)]
    pool = await db.create_pool(db_url, max_size=6)
    try:
        # three connections, batches of two: they take turns on the queue and never share a shop
        assert await profiles.drain_pool(pool, workers=3, batch=2) == 23
    finally:
        await pool.close()
    assert await conn.fetchval("SELECT count(*) FROM profile_dirty") == 0
    versions = await conn.fetch("SELECT shop_id, version FROM shop_profile ORDER BY shop_id")
    assert [r["shop_id"] for r in versions] == sorted(ids)
    first = versions[0]["version"]
    assert all(r["version"] == first for r in versions)  # each rebuilt exactly once
    answers = await conn.fetchval("SELECT count(DISTINCT shop_id) FROM citizen_answer")
    assert answers == 23


async def test_a_drain_that_fails_stops_the_others_and_gives_back_every_connection(
    db_url: str, conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(12):
        await factories.shop(conn, name=f"店{n}")
    real, calls = profiles.rebuild, []

    async def failing(*args: Any, **kwargs: Any) -> int:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("the database went away")
        return await real(*args, **kwargs)

    monkeypatch.setattr(profiles, "rebuild", failing)
    pool = await db.create_pool(db_url, max_size=6)
    try:
        with pytest.raises(ExceptionGroup):
            await profiles.drain_pool(pool, workers=3, batch=2)
        assert pool.get_idle_size() == pool.get_size()  # no drain left running on a connection
    finally:
        await pool.close()
    # the failed batch went back on the queue; nothing was lost
    rebuilt = await conn.fetchval("SELECT count(*) FROM shop_profile")
    assert rebuilt + await conn.fetchval("SELECT count(*) FROM profile_dirty") == 12


async def test_rendering_a_batch_does_not_stop_the_workers_other_work(
    conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answers of a batch take a quarter of a second to render; the worker keeps serving."""
    from merchant_code import rendering

    for n in range(30):
        await factories.shop(conn, name=f"店{n}")
    real = rendering.citizen_answers

    def slow(doc: str | bytes, base: str) -> rendering.Answers:
        busy(0.05)  # 30 shops: 1.5 s in all
        return real(doc, base)

    monkeypatch.setattr(rendering, "citizen_answers", slow)
    async with heartbeat() as gaps:
        assert await profiles.drain(conn) == 30
    # never held up for the batch's second and a half (a busy machine may stretch a gap, not that far)
    assert len(gaps) >= 5 and max(gaps) < min(scaled(0.5), 1.0), max(gaps)
    assert await conn.fetchval("SELECT count(*) FROM citizen_answer") == 90
