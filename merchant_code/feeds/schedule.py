"""One scheduler job per feed source, at the source's interval (coalesced, one at a time, a
misfire grace as long as the interval). A refresh job adds jobs for sources created since start
and drops those of sources removed or disabled. The runner's lease on the source makes running
the same job in every service instance safe: only one of them pulls a source at a time.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from merchant_code import db
from merchant_code.feeds import runner

log = logging.getLogger("merchant_code.feeds")
PREFIX = "feed:"


async def pull(state: Any, name: str) -> None:
    async with db.acquire(state.pool) as conn:
        source = await db.queries.get_feed_source(conn, name=name)
    if source is None or not source["enabled"]:
        return
    now = datetime.datetime.now(datetime.UTC)
    paused = source["paused_until"]
    if paused is not None and paused > now:
        # its failures were logged as they happened; each skipped interval is no news
        log.debug("feed %s is paused until %s after %s failures", name, paused, source["failures"])
        return
    if await _ran_lately(state, source):
        return
    # a bounded number at once, each on one connection of the jobs' pool: forty sources falling
    # due together wait their turn here, holding nothing; asked again once it is this one's turn,
    # since another instance may have pulled it meanwhile
    async with state.feed_slots:
        if await _ran_lately(state, source):
            return
        result = await runner.run_source(state.pool, name)
    c = result.counts
    changed = c.inserted or c.updated or c.quarantined
    # a run that brought nothing new is no news at INFO (a source every minute would bury the log)
    level = logging.INFO if changed else logging.DEBUG
    if result.status not in ("ok", "skipped"):
        level = logging.WARNING
    log.log(level, "feed %s: %s %s %s", name, result.status, result.counts, result.error or "")


async def _ran_lately(state: Any, source: Any) -> bool:
    """Every worker and instance has this job; the first to start a run within the interval takes it."""
    async with db.acquire(state.pool) as conn:
        last = await db.queries.get_last_feed_run_start(conn, source_id=source["id"])
    now = datetime.datetime.now(datetime.UTC)
    return last is not None and now - last < datetime.timedelta(seconds=source["interval_seconds"] * 0.9)


async def refresh(state: Any, scheduler: AsyncIOScheduler) -> None:
    """Make the jobs match the enabled sources."""
    async with db.acquire(state.pool) as conn:
        sources = [dict(r) async for r in db.queries.list_feed_sources(conn)]
    wanted = {PREFIX + s["name"]: s for s in sources if s["enabled"]}
    for job in scheduler.get_jobs():
        if job.id.startswith(PREFIX) and job.id not in wanted:
            job.remove()
    for job_id, source in wanted.items():
        seconds = int(source["interval_seconds"])
        existing = scheduler.get_job(job_id)
        if existing is not None and getattr(existing.trigger, "interval", None) == datetime.timedelta(
            seconds=seconds
        ):
            continue
        scheduler.add_job(
            pull,
            "interval",
            seconds=seconds,
            args=[state, source["name"]],
            id=job_id,
            replace_existing=True,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=seconds,
            next_run_time=datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=5),
        )


def install(state: Any, scheduler: AsyncIOScheduler) -> None:
    scheduler.add_job(
        refresh,
        "interval",
        seconds=60,
        args=[state, scheduler],
        id="feeds-refresh",
        coalesce=True,
        max_instances=1,
        next_run_time=datetime.datetime.now(datetime.UTC),
    )
