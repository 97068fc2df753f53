"""Marking a profile for rebuild never waits on another transaction (migration 0036).

At 1,000,000 shops a feed page of 100,000 inspections and a policy's 290,000 inbox deliveries
each held their shops' queue rows, uncommitted, for as long as they ran: a merchant's edit of one
of those shops waited for them (writes p99 of 4-7 s in the city mix), and two of them waited on
each other in a circle, so PostgreSQL undid the feed pull. The queue now takes a shop twice
rather than wait, and the drain takes every row of a shop at once."""

from __future__ import annotations

import asyncpg

from merchant_code import db, profiles
from tests import factories


async def _probe(conn: asyncpg.Connection) -> None:
    """A table whose inserts mark their shops as every input table does."""
    await conn.execute("CREATE TABLE probe (shop_id bigint NOT NULL)")
    await conn.execute(
        "CREATE TRIGGER probe_marks AFTER INSERT ON probe REFERENCING NEW TABLE AS changed_rows"
        " FOR EACH STATEMENT EXECUTE FUNCTION profile_dirty_by_shop_id()"
    )


async def test_a_write_does_not_wait_for_a_large_transaction_marking_the_same_shop(
    conn: asyncpg.Connection, db_url: str
) -> None:
    ids = [(await factories.shop(conn))[0] for _ in range(3)]
    await profiles.drain(conn)
    await _probe(conn)
    bulk, edit = await db.connect(db_url), await db.connect(db_url)
    try:
        held = bulk.transaction()
        await held.start()
        await bulk.execute("INSERT INTO probe SELECT unnest($1::bigint[])", ids)  # uncommitted marks
        # one shop's edit, while the bulk transaction is still open: marked at once, not after it
        await edit.execute("SET statement_timeout = '5s'")
        await edit.execute("INSERT INTO probe VALUES ($1)", ids[0])
        # and the other way round in the same transaction (the circle that undid the feed pull)
        async with edit.transaction():
            await edit.execute("INSERT INTO probe VALUES ($1)", ids[1])
            await bulk.execute("INSERT INTO probe VALUES ($1)", ids[2])
            await edit.execute("INSERT INTO probe VALUES ($1)", ids[2])
        await held.commit()
    finally:
        await bulk.close()
        await edit.close()
    queued = await conn.fetchval("SELECT count(*) FROM profile_dirty")
    assert queued > len(ids)  # some shops are queued twice: the price of never waiting
    assert await db.queries.count_dirty_profiles(conn) == len(ids)
    assert await profiles.drain(conn) == len(ids)  # each rebuilt once
    assert await conn.fetchval("SELECT count(*) FROM profile_dirty") == 0
