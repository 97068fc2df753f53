"""Every LIVES shape the specification allows, served over loopback HTTP and pulled through the
runner into the real database: only the required columns, optional ones in any order and case,
multi-file zips (in a folder or not), single files, the flattened variant zipped with its
feed_info.csv and legend.csv or alone, YYYYMMDD and ISO dates, NULL and empty as unknown, quoted
commas and newlines. The files are written here from the specification, not from the parser."""

from __future__ import annotations

import datetime
import io
import json
import zipfile
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from merchant_code import db, profiles
from merchant_code.feeds import runner
from tests import factories, loopback_files
from tests import world as w

D = datetime.date


class Feed:
    """A publisher's URL on 127.0.0.1 whose body the test replaces between pulls."""

    def __init__(self) -> None:
        self.body = b""
        self.url = ""


@pytest.fixture
def feed() -> Iterator[Feed]:
    served = Feed()
    with loopback_files.serving(lambda path: (200, served.body, None)) as base:
        served.url = base + "/lives"
        yield served


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    made = await db.create_pool(db_url, max_size=4)
    try:
        yield made
    finally:
        await made.close()


def zipped(files: dict[str, str | bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


async def shops(conn: asyncpg.Connection, n: int) -> list[tuple[str, str]]:
    """n shops in the register: (USCC, which is the feed's business_id, and public code)."""
    out = []
    for k in range(n):
        shop_id, code = await factories.shop(conn, name=f"店{k}")
        out.append((await conn.fetchval("SELECT uscc FROM shop WHERE id = $1", shop_id), code))
    return out


async def source(conn: asyncpg.Connection, feed: Feed, name: str = "city", **config: object) -> None:
    await conn.execute(
        "INSERT INTO feed_source (kind, name, url, config) VALUES ('lives', $1, $2, $3)",
        name,
        feed.url,
        {"allow_private": True, **config},
    )


async def pull(pool: asyncpg.Pool, name: str = "city") -> runner.RunResult:
    result = await runner.run_source(pool, name, deadline=60)
    assert result.status == "ok", result.error
    return result


async def stored(conn: asyncpg.Connection, name: str = "city") -> list[tuple[Any, ...]]:
    """What the source stored, without internal ids: shop, date, kind, score and scale, result,
    summary, and the violations (code, description, critical) in order."""
    rows = await conn.fetch(
        """SELECT s.code, i.inspected_on, i.kind, i.score::float8 AS score, i.score_scale, i.result,
                  i.summary,
                  (SELECT coalesce(jsonb_agg(jsonb_build_array(v.code, v.description, v.critical)
                                             ORDER BY v.code, v.description), '[]')
                   FROM violation v WHERE v.inspection_id = i.id)::text AS violations
           FROM inspection i JOIN shop s ON s.id = i.shop_id WHERE i.source = $1""",
        name,
    )
    return sorted(
        ((*r[:7], json.loads(r["violations"])) for r in rows),
        key=lambda t: json.dumps(t, default=str),
    )


async def test_only_the_required_columns_ingest_and_an_unstated_result_is_shown_as_not_stated(
    feed: Feed, pool: asyncpg.Pool, conn: asyncpg.Connection, client: AsyncTestClient[Any]
) -> None:
    (a, code_a), (b, _) = await shops(conn, 2)
    # inspections.csv's required columns only: business_id, score, date (the spec has no result)
    feed.body = zipped(
        {
            "businesses.csv": f"business_id,name,address\n{a},店0,路1号\n{b},店1,路2号\n",
            "inspections.csv": f"business_id,score,date\n{a},92,20240301\n{b},,20240302\n",
            "violations.csv": f"business_id,date,code,description\n{a},20240301,101,Floor dirty\n",
            "feed_info.csv": "feed_date,feed_version,municipality_name,municipality_url,contact_email\n"
            "20240310,1,Test City,,\n",
        }
    )
    await source(conn, feed)
    result = await pull(pool)
    assert (result.counts.inserted, result.counts.quarantined) == (4, 0)  # 2 mappings, 2 inspections
    code_b = await conn.fetchval("SELECT code FROM shop WHERE uscc = $1", b)
    assert await stored(conn) == sorted(
        [
            (
                code_a,
                D(2024, 3, 1),
                "routine",
                92.0,
                "lives_0_100",
                None,
                None,
                [["101", "Floor dirty", None]],
            ),
            (code_b, D(2024, 3, 2), "routine", None, None, None, None, []),
        ],
        key=lambda t: json.dumps(t, default=str),
    )
    await profiles.drain(conn)
    citizen = await client.get(f"/s/{code_a}")
    assert "未说明" in citizen.text and "合格" not in citizen.text
    english = await client.get(f"/s/{code_a}?lang=en")
    assert "not stated" in english.text


async def test_a_zip_of_the_flattened_file_with_feed_info_and_legend_ingests(
    feed: Feed, pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    (a, code_a), (b, code_b) = await shops(conn, 2)
    # columns in another order and case than the spec lists them; ISO dates; a quoted comma and a
    # quoted newline; NULL and empty as unknown; no inspection_result: the legend gives it
    flat = (
        "Inspection_Date,BUSINESS_ID,business_name,Inspection_Score,inspection_type,"
        "violation_code,Violation_Description,inspection_id\r\n"
        f'2024-04-01,{a},"店0, 总店",95,Routine,NO,No violations,I-1\r\n'
        f'2024-04-02,{b},店1,62,Routine,201,"Rodents seen,\nkitchen",I-2\r\n'
        f"2024-04-02,{b},店1,62,Routine,202,NULL,I-2\r\n"
        f"2024-04-03,{b},店1,NULL,Complaint,,,I-3\r\n"
    )
    feed.body = zipped(
        {
            "export/inspections_flat.csv": flat,
            "export/FEED_INFO.CSV": "feed_date,feed_version,municipality_name,municipality_url,contact_email,"
            "scoring_method\n2024-04-05,7,Test City,,,graded\n",
            "export/legend.csv": "minimum_score,maximum_score,description\n"
            "0,69,Fail\n70,84,Conditional Pass\n85,100,Pass\n",
        }
    )
    await source(conn, feed)
    result = await pull(pool)
    assert result.counts.quarantined == 0
    assert await stored(conn) == sorted(
        [
            (code_a, D(2024, 4, 1), "routine", 95.0, "lives_0_100", "pass", None, []),
            (
                code_b,
                D(2024, 4, 2),
                "routine",
                62.0,
                "lives_0_100",
                "fail",
                None,
                [["201", "Rodents seen,\nkitchen", None], ["202", "", None]],
            ),
            (code_b, D(2024, 4, 3), "complaint", None, None, None, None, []),
        ],
        key=lambda t: json.dumps(t, default=str),
    )


SHAPES = ["multi_in_folder", "inspections_alone", "flattened_alone", "flattened_zip"]


@pytest.mark.parametrize("shape", SHAPES)
async def test_each_shape_of_one_feed_stores_the_same_inspections(
    shape: str, feed: Feed, pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    (a, code_a), (b, code_b) = await shops(conn, 2)
    # the multi-file form: optional columns in another order and UPPER case, YYYYMMDD and ISO
    # dates, a result in words, a description with a comma and a newline
    inspections = (
        "DATE,Business_ID,TYPE,Score,description,RESULT\n"
        f'20240501,{a},Routine,88,"Kitchen clean, staff trained",Pass\n'
        f'2024-05-02,{b},Follow-up,71,"Re-check\nof the cold room",Conditional Pass\n'
    )
    violations = (
        "critical,code,business_id,date,description\n"
        f'Y,301,{b},20240502,"Cold room at 9°C, over the limit"\n'
        f"NULL,302,{b},20240502,Log missing\n"
    )
    flattened = (
        "business_id,inspection_date,inspection_type,inspection_score,inspection_description,"
        "inspection_result,violation_code,violation_critical,violation_description\n"
        f'{a},2024-05-01,Routine,88,"Kitchen clean, staff trained",Pass,,,\n'
        f'{b},20240502,Follow-up,71,"Re-check\nof the cold room",Conditional Pass,301,Y,'
        '"Cold room at 9°C, over the limit"\n'
        f'{b},2024-05-02,Follow-up,71,"Re-check\nof the cold room",Conditional Pass,302,,Log missing\n'
    )
    bodies = {
        "multi_in_folder": zipped(
            {
                "lives/businesses.csv": f"business_id,name,address\n{a},店0,路1号\n{b},店1,路2号\n",
                "lives/inspections.csv": inspections,
                "lives/violations.csv": violations,
            }
        ),
        "inspections_alone": inspections.encode(),
        "flattened_alone": flattened.encode(),
        "flattened_zip": zipped({"Flat.csv": flattened}),
    }
    feed.body = bodies[shape]
    await source(conn, feed)
    result = await pull(pool)
    assert result.counts.quarantined == 0
    with_violations = [
        ["301", "Cold room at 9°C, over the limit", True],
        ["302", "Log missing", None],
    ]
    expected = [
        (code_a, D(2024, 5, 1), "routine", 88.0, "lives_0_100", "pass", "Kitchen clean, staff trained", []),
        (
            code_b,
            D(2024, 5, 2),
            "follow_up",
            71.0,
            "lives_0_100",
            "rectify",
            "Re-check\nof the cold room",
            [] if shape == "inspections_alone" else with_violations,
        ),
    ]
    assert await stored(conn) == sorted(expected, key=lambda t: json.dumps(t, default=str))


async def test_a_legend_without_result_words_invents_no_result(
    feed: Feed, pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    [(a, _)] = await shops(conn, 1)
    feed.body = zipped(
        {
            "inspections.csv": f"business_id,score,date\n{a},55,20240601\n",
            "legend.csv": "minimum_score,maximum_score,description\n0,70,Poor\n71,100,Good\n",
            "feed_info.csv": "feed_date,feed_version,municipality_name,municipality_url,contact_email\n"
            "20240602,1,X,,\n",
        }
    )
    await source(conn, feed)
    await pull(pool)
    assert [r[5] for r in await stored(conn)] == [None]


async def test_fhrs_points_and_demerit_points_are_shown_with_their_scale_words(
    feed: Feed, pool: asyncpg.Pool, conn: asyncpg.Connection, client: AsyncTestClient[Any]
) -> None:
    [(a, code)] = await shops(conn, 1)
    # a publisher whose scores are cumulative points (lower is better), as its feed_info says
    feed.body = zipped(
        {
            "inspections.csv": f"business_id,score,date\n{a},20,20240701\n",
            "feed_info.csv": "feed_date,feed_version,municipality_name,municipality_url,contact_email,"
            "scoring_method\n20240702,1,X,,,cumulative\n",
        }
    )
    await source(conn, feed)
    await pull(pool)
    assert [r[3:5] for r in await stored(conn)] == [(20.0, "demerit_points")]
    shop_id = await conn.fetchval("SELECT id FROM shop WHERE code = $1", code)
    await conn.execute(
        "INSERT INTO inspection (shop_id, source, external_id, inspected_on, score, score_scale, result)"
        " VALUES ($1, 'fsa', '1|2024-06-01', '2024-06-01', 20, 'fhrs_points', 'pass')",
        shop_id,
    )
    await factories.account(conn, "insp", "inspector", area_code="310199")
    headers = {"authorization": f"Bearer {await w.log_in(client, 'insp')}"}
    await profiles.drain(conn)
    page = (await client.get(f"/s/{code}", headers=headers)).text
    assert "扣分 20（越低越好）" in page and "扣分 20（FHRS，越低越好）" in page
    assert "20 / 100" not in page
    english = (await client.get(f"/s/{code}?lang=en", headers=headers)).text
    assert "20 points (FHRS, lower is better)" in english and "20 demerit points (lower is better)" in english
    body = (await client.get(f"/s/{code}", headers={**headers, "accept": "application/json"})).json()
    assert sorted(x["score_scale"] for x in body["inspections"]) == ["demerit_points", "fhrs_points"]
    citizen = (await client.get(f"/s/{code}", headers={"accept": "application/json"})).json()
    assert all("score" not in x and "score_scale" not in x for x in citizen["inspections"])
