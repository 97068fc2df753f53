"""Identity that survives re-publishing: a flattened LIVES file whose inspection_id is a row
counter, re-published in other orders (and so re-numbered), stores the same visits on the same
shops, never twice; same-day inspections of the multi-file form are numbered by content, not by
row order; and any permutation of a feed's rows parses to the same records (Hypothesis)."""

from __future__ import annotations

import random
from typing import Any

import asyncpg
import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from merchant_code.feeds import lives
from merchant_code.feeds.base import InspectionRecord, Page
from tests.test_feeds_lives_shapes import Feed, feed, pool, pull, shops, source, stored, zipped

__all__ = ["feed", "pool"]  # the fixtures, shared with the shapes' tests

CONFIG = lives.Config(url="http://127.0.0.1:9/lives.csv")
SETTINGS = settings(
    max_examples=40, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck)
)
HEADER = (
    "inspection_id,business_id,inspection_date,inspection_type,inspection_score,"
    "violation_code,violation_description,violation_critical\n"
)


def visits(ids: list[str]) -> list[list[str]]:
    """Five visits over three businesses as rows of the flattened file (one row per violation),
    without their inspection_id: two visits of one business on one day among them."""
    a, b, c = ids
    return [
        [f"{a},2024-03-01,Routine,90,101,Floor dirty,N", f"{a},2024-03-01,Routine,90,102,No soap,Y"],
        [f"{a},2024-03-01,Follow-up,96,,,"],
        [f"{b},2024-03-02,Complaint,70,201,Rodents,Y"],
        [f"{b},2024-04-02,Routine,85,,,"],
        [f"{c},2024-03-03,Routine,99,,,"],
    ]


def published(groups: list[list[str]], order: list[int]) -> bytes:
    """The visits in `order`, numbered 1, 2, 3 ... in that order: a row counter."""
    lines = [f"{n},{row}\n" for n, at in enumerate(order, 1) for row in groups[at]]
    return (HEADER + "".join(lines)).encode()


async def test_a_row_counter_feed_re_published_in_three_orders_stores_the_same_visits_once(
    feed: Feed, pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    usccs = [u for u, _ in await shops(conn, 3)]
    groups = visits(usccs)
    await source(conn, feed)
    feed.body = published(groups, [0, 1, 2, 3, 4])
    await pull(pool)
    first = await stored(conn)
    assert len(first) == 5
    # something attached to one visit: the shop's reply to the complaint visit
    await conn.execute(
        "UPDATE inspection SET merchant_reply = 'fixed' WHERE source = 'city' AND kind = 'complaint'"
    )
    for order in ([4, 3, 2, 1, 0], [2, 0, 4, 1, 3], [1, 4, 0, 3, 2]):
        feed.body = published(groups, order)
        result = await pull(pool)
        assert result.counts.inserted == 0 and result.counts.quarantined == 0
        assert await stored(conn) == first  # nothing duplicated, lost or moved to another shop
        assert await conn.fetchval("SELECT count(*) FROM inspection WHERE source = 'city'") == 5
        replied = await conn.fetch(
            "SELECT s.uscc, i.kind FROM inspection i JOIN shop s ON s.id = i.shop_id"
            " WHERE i.source = 'city' AND i.merchant_reply IS NOT NULL"
        )
        assert [tuple(r) for r in replied] == [(usccs[1], "complaint")]
    assert await conn.fetchval("SELECT unstable_ids FROM feed_source WHERE name = 'city'")


async def test_a_source_declared_unstable_keys_its_visits_by_content_from_the_first_pull(
    feed: Feed, pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    groups = visits([u for u, _ in await shops(conn, 3)])
    await source(conn, feed, unstable_ids=True)
    feed.body = published(groups, [0, 1, 2, 3, 4])
    await pull(pool)
    first = await stored(conn)
    ids = await conn.fetch("SELECT external_id FROM inspection WHERE source = 'city'")
    assert all(r["external_id"].startswith("ck:") for r in ids)
    feed.body = published(groups, [3, 1, 4, 0, 2])
    assert (await pull(pool)).counts.inserted == 0
    assert await stored(conn) == first


async def test_a_stable_source_with_two_identical_visits_is_not_taken_for_a_row_counter(
    feed: Feed, pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    [(a, _)] = await shops(conn, 1)
    body = HEADER + f"X-1,{a},2024-05-01,Routine,90,,,\nX-2,{a},2024-05-01,Routine,90,,,\n"
    await source(conn, feed)
    feed.body = body.encode()
    await pull(pool)
    feed.body = (body + f"X-3,{a},2024-05-09,Routine,80,,,\n").encode()
    await pull(pool)
    ids = await conn.fetch("SELECT external_id FROM inspection WHERE source = 'city' ORDER BY external_id")
    assert [r["external_id"] for r in ids] == ["X-1", "X-2", "X-3"]
    assert not await conn.fetchval("SELECT unstable_ids FROM feed_source WHERE name = 'city'")


async def test_same_day_inspections_of_the_multi_file_form_keep_their_ids_in_any_row_order(
    feed: Feed, pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    [(a, _)] = await shops(conn, 1)
    rows = [f"{a},20240601,Follow-up,95", f"{a},20240601,Routine,80", f"{a},20240601,Complaint,60"]
    violations = f"business_id,date,code,description\n{a},20240601,101,Floor dirty\n"
    await source(conn, feed)
    states = []
    for order in ([0, 1, 2], [2, 1, 0], [1, 2, 0]):
        inspections = "business_id,date,type,score\n" + "".join(rows[k] + "\n" for k in order)
        feed.body = zipped({"inspections.csv": inspections, "violations.csv": violations})
        assert (await pull(pool)).counts.quarantined == 0
        states.append(
            [
                tuple(r)
                for r in await conn.fetch(
                    "SELECT external_id, kind, score::float8,"
                    " (SELECT count(*) FROM violation v WHERE v.inspection_id = i.id)"
                    " FROM inspection i WHERE source = 'city' ORDER BY external_id"
                )
            ]
        )
    assert states[0] == states[1] == states[2]
    # the routine visit comes first in a day, and takes the day's violations
    assert states[0][0][1:] == ("routine", 80.0, 1)


def records(body: bytes, config: lives.Config = CONFIG) -> list[Any]:
    """The parsed records in one order (the file's order is not part of what is stored)."""
    parsed = lives.parse(Page(body), config)
    return sorted(parsed.records, key=lambda r: msgspec.json.encode(r))


MULTI = [
    "B1,20240101,Routine,90,Pass",
    "B1,20240101,Follow-up,95,",
    "B1,20240101,Routine,90,Pass",  # a visit listed twice: both kept, numbered alike in any order
    "B2,2024-01-02,Complaint,NULL,Fail",
    "B2,20240103,,70,",
    'B3,20240104,Routine,88,"Pass"',
]
MULTI_VIOLATIONS = [
    "B1,20240101,101,Floor dirty,Y",
    "B1,20240101,102,No soap,",
    "B2,20240102,201,Rodents,N",
    "B2,20240103,202,Log missing,NULL",
]


@SETTINGS
@given(st.permutations(MULTI), st.permutations(MULTI_VIOLATIONS))
def test_any_permutation_of_the_multi_file_rows_parses_to_the_same_records(
    inspections: list[str], violations: list[str]
) -> None:
    def body(ins: list[str], vio: list[str]) -> bytes:
        return zipped(
            {
                "inspections.csv": "business_id,date,type,score,result\n" + "\n".join(ins) + "\n",
                "violations.csv": "business_id,date,code,description,critical\n" + "\n".join(vio) + "\n",
            }
        )

    assert records(body(inspections, violations)) == records(body(MULTI, MULTI_VIOLATIONS))


FLAT_GROUPS = visits(["B1", "B2", "B3"])


@SETTINGS
@given(st.permutations(range(len(FLAT_GROUPS))), st.randoms(use_true_random=False))
def test_any_permutation_of_a_row_counter_flattened_file_parses_to_the_same_visits(
    order: list[int], rng: random.Random
) -> None:
    config = lives.Config(url=CONFIG.url, unstable_ids=True)
    shuffled = [rows[:] for rows in FLAT_GROUPS]
    for rows in shuffled:
        rng.shuffle(rows)  # a visit's violation rows in any order too
    expected = records(published(FLAT_GROUPS, list(range(len(FLAT_GROUPS)))), config)
    assert records(published(shuffled, list(order)), config) == expected
    assert all(r.external_id.startswith("ck:") for r in expected if isinstance(r, InspectionRecord))
