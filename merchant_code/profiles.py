"""The shop profile (the portrait): one row per shop with a document for each audience, rebuilt
set-based in SQL (sql/queries/profiles.sql) from the shop's records.

Writers never rebuild: triggers on every input table put the shop into `profile_dirty` (without
waiting on anyone: a shop may be queued twice, migration 0036), and `drain` (a scheduled job in
every instance) takes batches off that queue with SKIP LOCKED, every row of each shop it claims,
and rebuilds them in the same transaction. `rebuild_all` does every shop, in id ranges.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Callable
from typing import Any

import asyncpg

from merchant_code import db, load, rendering
from merchant_code.settings import Settings, cores

BATCH = 2000
# connections that drain at once: the SQL of one batch runs in PostgreSQL while this process renders
# another's answers, and PostgreSQL runs each connection's SQL on a core of its own
DRAIN_WORKERS = max(2, min(4, cores()))
# seconds of rendering before the event loop gets a turn: the longest a request to this worker
# waits on a rebuild's templates
SLICE = 0.05
# the base of the URLs in a page's JSON-LD when the caller names none (the settings' default)
DEFAULT_BASE = Settings().base_url


async def rebuild(
    conn: asyncpg.Connection, shop_ids: list[int], today: datetime.date | None = None, base: str | None = None
) -> int:
    """Rebuild these shops' profiles (SQL, set-based), then render their citizen answers (JSON and
    both pages) into the same rows, in the caller's transaction."""
    if not shop_ids:
        return 0
    written: int = await db.queries.rebuild_profiles(conn, ids=shop_ids, today=today or datetime.date.today())
    await render(conn, shop_ids, base or DEFAULT_BASE)
    return written


async def render(conn: asyncpg.Connection, shop_ids: list[int], base: str) -> None:
    """Render the citizen answers of these profiles into `citizen_answer`, one row per kind, each
    with whom its trade notices are for (joined when served, notices.py).
    A batch takes a quarter of a second of templates: the loop gets a turn after every SLICE of
    it, so the worker's requests go on being served meanwhile. (Rendering in a thread, or in
    slices of 5 ms, made the rebuild 10-15% slower; slices of 50 ms cost nothing measurable.)"""
    codes: list[str] = []
    kinds: list[str] = []
    owners: list[int] = []
    versions: list[int] = []
    statuses: list[int] = []
    bodies: list[bytes] = []
    audiences: list[str | None] = []
    turn = time.perf_counter() + SLICE
    async for row in db.queries.list_citizen_docs(conn, ids=shop_ids):
        answers = rendering.citizen_answers(row["doc"], base)
        for kind, body in (("json", answers.json), ("zh", answers.html_zh), ("en", answers.html_en)):
            codes.append(row["code"])
            kinds.append(kind)
            owners.append(row["shop_id"])
            versions.append(row["version"])
            statuses.append(answers.status)
            bodies.append(body)
            audiences.append(row["audience"])
        if time.perf_counter() > turn:
            await asyncio.sleep(0)
            turn = time.perf_counter() + SLICE
    await db.queries.store_citizen_answers(
        conn,
        codes=codes,
        kinds=kinds,
        shop_ids=owners,
        versions=versions,
        statuses=statuses,
        bodies=bodies,
        audiences=audiences,
    )


async def drain(
    conn: asyncpg.Connection, batch: int = BATCH, today: datetime.date | None = None, base: str | None = None
) -> int:
    """Rebuild every profile marked dirty, a batch per transaction; returns how many."""
    total = 0
    while True:
        rebuilt, more = await _one_batch(conn, batch, today, base)
        total += rebuilt
        if not more:
            return total
        await load.pause_if_busy()


async def _one_batch(
    conn: asyncpg.Connection, batch: int, today: datetime.date | None, base: str | None
) -> tuple[int, bool]:
    """Take up to `batch` shops off the queue and rebuild them, in one transaction: (how many,
    whether the batch was full, so more may wait)."""
    async with conn.transaction():
        ids: list[int] = await db.queries.claim_dirty_profiles(conn, batch=batch)
        rebuilt = await rebuild(conn, ids, today, base)
    return rebuilt, len(ids) == batch


async def drain_pool(
    pool: asyncpg.Pool,
    workers: int = DRAIN_WORKERS,
    batch: int = BATCH,
    today: datetime.date | None = None,
    base: str | None = None,
) -> int:
    """`drain` on several connections of the pool at once when the queue is long: one batch is
    taken first, and only when it was full do `workers` connections (at most half the jobs'
    pool, so feed pulls and policy sends still get theirs) drain the rest, each claiming its own
    batches (SKIP LOCKED). If one fails the others are cancelled, so none is left holding a
    connection. Returns how many profiles were rebuilt."""
    async with db.acquire(pool) as conn:
        first, more = await _one_batch(conn, batch, today, base)
    if not more:
        return first
    workers = max(1, min(workers, pool.get_max_size() // 2))

    async def one() -> int:
        async with db.acquire(pool) as conn:
            return await drain(conn, batch, today, base)

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(one()) for _ in range(workers)]
    return first + sum(task.result() for task in tasks)


class _Soon:
    """After-write drains of one worker process, coalesced: a burst of two hundred complaints asks
    for two hundred drains; one runs, and runs once more if more were asked for meanwhile."""

    def __init__(self) -> None:
        self.running = self.again = False

    async def drain(self, pool: asyncpg.Pool, base: str | None) -> None:
        if self.running:
            self.again = True
            return
        self.running = True
        try:
            while True:
                self.again = False
                await drain_pool(pool, base=base)
                if not self.again:
                    return
        finally:
            self.running = False


drain_soon = _Soon().drain


async def rebuild_all(
    conn: asyncpg.Connection,
    batch: int = 5000,
    today: datetime.date | None = None,
    progress: Callable[[str], Any] | None = None,
    base: str | None = None,
) -> tuple[int, float]:
    """Every shop's profile, in id ranges (one transaction each); (profiles, seconds)."""
    started = time.perf_counter()
    after, total = 0, 0
    while True:
        ids: list[int] = await db.queries.list_shop_id_range(conn, after=after, batch=batch)
        if not ids:
            break
        async with conn.transaction():
            # off the queue first: a drain that holds some of these waits for this transaction
            # instead of the two waiting on each other's rows
            await db.queries.clear_dirty_profiles(conn, ids=ids)
            total += await rebuild(conn, ids, today, base)
        after = ids[-1]
        if progress is not None and total % (batch * 20) == 0:
            progress(f"  {total} profiles rebuilt")
    return total, time.perf_counter() - started


async def drain_job(state: Any) -> None:
    """Scheduled: keep profiles current (one drain per worker, with those after writes)."""
    await drain_soon(state.pool, state.settings.base_url)
