"""The scan cache's change watermark: every worker shows a changed profile within two seconds,
with no round trip on a cached scan, even when the changes commit out of order."""

from __future__ import annotations

import asyncio
import datetime
import time
from typing import Any

import asyncpg
import msgspec
from litestar.testing import AsyncTestClient

from merchant_code import db, profiles
from merchant_code.app import create_app
from merchant_code.settings import Settings
from tests import factories
from tests.watermark import caught_up, deadline

JSON = {"accept": "application/json"}


async def grade_of(client: AsyncTestClient[Any], code: str) -> str | None:
    answer = await client.get(f"/s/{code}", headers=JSON)
    assert answer.status_code == 200
    grade: str | None = answer.json()["grade"]
    return grade


async def seconds_until_grade(client: AsyncTestClient[Any], code: str, grade: str) -> float:
    start = time.monotonic()
    limit = deadline()
    while await grade_of(client, code) != grade:
        assert time.monotonic() - start < limit, f"{code} never showed grade {grade}"
        await asyncio.sleep(0.01)
    return time.monotonic() - start


async def test_a_changed_profile_is_shown_by_every_worker_within_two_seconds(
    conn: asyncpg.Connection, settings: Settings, today: datetime.date
) -> None:
    every_half_second = msgspec.structs.replace(settings, scan_watermark_seconds=0.5)
    shop_id, code = await factories.shop(conn)
    await profiles.drain(conn)
    async with (
        AsyncTestClient(app=create_app(every_half_second)) as one,
        AsyncTestClient(app=create_app(every_half_second)) as two,
    ):
        assert await grade_of(one, code) is None and await grade_of(two, code) is None
        await factories.inspection(conn, shop_id, on=today, grade="B")
        await profiles.drain(conn)
        lags = [await seconds_until_grade(one, code, "B"), await seconds_until_grade(two, code, "B")]
        print(f"watermark lag at 0.5 s polls: {lags[0]:.3f} s, {lags[1]:.3f} s")
        assert max(lags) < 2.0


async def test_a_change_that_commits_after_a_later_one_is_still_seen(
    client: AsyncTestClient[Any],
    conn: asyncpg.Connection,
    db_url: str,
    settings: Settings,
    today: datetime.date,
) -> None:
    first_id, first = await factories.shop(conn)
    second_id, second = await factories.shop(conn)
    await profiles.drain(conn)
    assert await grade_of(client, first) is None and await grade_of(client, second) is None
    await factories.inspection(conn, first_id, on=today, grade="C")
    await factories.inspection(conn, second_id, on=today, grade="B")
    late = await db.connect(db_url)
    try:
        # the first rebuild takes the lower change_seq but commits last
        slow = late.transaction()
        await slow.start()
        await profiles.rebuild(late, [first_id], base=settings.base_url)
        async with conn.transaction():
            await profiles.rebuild(conn, [second_id], base=settings.base_url)
        await seconds_until_grade(client, second, "B")
        await caught_up(client.app)  # the watermark has passed the first one's change_seq
        assert await grade_of(client, first) is None
        await slow.commit()
    finally:
        await late.close()
    assert await seconds_until_grade(client, first, "C") < 2.0


async def test_a_cached_scan_keeps_the_cache_bounded(conn: asyncpg.Connection, settings: Settings) -> None:
    codes = [(await factories.shop(conn))[1] for _ in range(5)]
    await profiles.drain(conn)
    three = msgspec.structs.replace(settings, scan_cache_entries=3)
    async with AsyncTestClient(app=create_app(three)) as client:
        for code in codes:
            assert await grade_of(client, code) is None
        assert len(client.app.state.profile_cache.entries) == 3
