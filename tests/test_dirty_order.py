"""Statements that mark many of the same shops for rebuild at once never deadlock.

At 1,000,000 shops a feed page of 100,000 inspections and a policy's 290,000 inbox deliveries,
running together, inserted their rebuild-queue rows in hash order; each waited on the other's
uncommitted rows and PostgreSQL undid the feed pull (migration 0035 marks in shop order)."""

from __future__ import annotations

import asyncio
import datetime

import asyncpg

from merchant_code import db
from merchant_code.district import seed_district

ROUNDS = 12
OLD_ORDER = """CREATE FUNCTION hash_order_marks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO profile_dirty (shop_id) SELECT DISTINCT shop_id FROM changed_rows
    ON CONFLICT (shop_id) DO NOTHING;
    RETURN NULL;
END
$$"""


async def _deadlocks(conn: asyncpg.Connection, db_url: str, function: str) -> int:
    """Rounds, of ROUNDS, in which two statements marking overlapping sets of shops (nearly all,
    and one in eight: hash tables of other sizes, so other orders) deadlocked."""
    await conn.execute("CREATE TABLE IF NOT EXISTS probe (shop_id bigint NOT NULL)")
    await conn.execute("DROP TRIGGER IF EXISTS probe_marks ON probe")
    await conn.execute(
        "CREATE TRIGGER probe_marks AFTER INSERT ON probe REFERENCING NEW TABLE AS changed_rows"
        f" FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
    )
    one, two = await db.connect(db_url), await db.connect(db_url)
    for c in (one, two):
        # as at a city's scale, where DISTINCT over 100,000 shops is hashed, not sorted
        await c.execute("SET enable_sort = off")
    deadlocks = 0
    try:
        for _ in range(ROUNDS):
            await conn.execute("DELETE FROM profile_dirty")

            async def mark(c: asyncpg.Connection, where: str) -> bool:
                try:
                    async with c.transaction():
                        await c.execute(f"INSERT INTO probe SELECT id FROM shop WHERE {where}")
                except asyncpg.DeadlockDetectedError:
                    return True
                return False

            results = await asyncio.gather(mark(one, "id % 50 <> 0"), mark(two, "id % 8 = 0"))
            deadlocks += any(results)
    finally:
        await one.close()
        await two.close()
    return deadlocks


async def test_two_large_marks_of_the_same_shops_never_deadlock(
    conn: asyncpg.Connection, db_url: str
) -> None:
    await seed_district(conn, shops=4000, seed=5, today=datetime.date(2026, 3, 1))
    await conn.execute(OLD_ORDER)
    before = await _deadlocks(conn, db_url, "hash_order_marks")
    now = await _deadlocks(conn, db_url, "profile_dirty_by_shop_id")
    print(f"rounds of {ROUNDS} that deadlocked: {before} in hash order, {now} in shop order")
    assert now == 0
