"""A stopping worker lets running jobs finish, cuts the rest short in one line, and keeps
APScheduler's per-run lines out of the log unless asked for them."""

from __future__ import annotations

import asyncio
import datetime
import logging
import time

import pytest
from apscheduler.events import EVENT_JOB_MAX_INSTANCES
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from merchant_code.scheduler import quiet_scheduler, stop_scheduler


async def _started(scheduler: AsyncIOScheduler, job: object, entered: asyncio.Event) -> None:
    scheduler.add_job(job, "date", run_date=datetime.datetime.now(datetime.UTC), id="job")
    scheduler.start()
    await asyncio.wait_for(entered.wait(), 60)  # generous: the machine may be busy


async def test_a_running_job_finishes_before_the_scheduler_stops() -> None:
    entered, release, finished = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def job() -> None:
        entered.set()
        await release.wait()
        finished.set()

    scheduler = AsyncIOScheduler(timezone="UTC")
    await _started(scheduler, job, entered)
    stopping = asyncio.create_task(stop_scheduler(scheduler, grace=60))
    await asyncio.sleep(0)
    assert not stopping.done(), "the stop did not wait for the running job"
    release.set()
    await asyncio.wait_for(stopping, 60)
    assert finished.is_set()


async def test_a_job_that_outlasts_the_grace_is_cut_short_in_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    quiet_scheduler("info")
    entered = asyncio.Event()

    async def job() -> None:
        entered.set()
        await asyncio.Event().wait()

    scheduler = AsyncIOScheduler(timezone="UTC")
    await _started(scheduler, job, entered)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="apscheduler"):
        await stop_scheduler(scheduler, grace=0.2)
    assert time.monotonic() - started < 30
    cut = [r for r in caplog.records if "cut short" in r.getMessage()]
    assert len(cut) == 1 and cut[0].levelno == logging.WARNING and cut[0].exc_info is None
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_apscheduler_runs_are_logged_only_at_debug() -> None:
    quiet_scheduler("info")
    assert not logging.getLogger("apscheduler.executors.default").isEnabledFor(logging.INFO)
    assert logging.getLogger("apscheduler.executors.default").isEnabledFor(logging.WARNING)
    quiet_scheduler("debug")
    assert logging.getLogger("apscheduler.executors.default").isEnabledFor(logging.INFO)
    quiet_scheduler("info")


async def test_a_run_skipped_while_the_last_still_runs_is_no_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A drain working through a push outlasts its 2 s interval: each skipped run was a WARNING
    line, two a second per job, which buried everything else in a busy service's log."""
    skipped = asyncio.Event()
    scheduler = AsyncIOScheduler(timezone="UTC")
    scheduler.add_listener(lambda event: skipped.set(), EVENT_JOB_MAX_INSTANCES)

    async def job() -> None:
        await asyncio.Event().wait()  # outlasts every interval

    quiet_scheduler("info")
    with caplog.at_level(logging.WARNING, logger="apscheduler"):
        scheduler.add_job(job, "interval", seconds=0.05, max_instances=1, id="long")
        scheduler.start()
        try:
            await asyncio.wait_for(skipped.wait(), 60)  # generous: the machine may be busy
            assert not [r for r in caplog.records if "running instances" in r.getMessage()]
            quiet_scheduler("debug")
            skipped.clear()
            await asyncio.wait_for(skipped.wait(), 60)
            assert [r for r in caplog.records if "running instances" in r.getMessage()]
        finally:
            quiet_scheduler("info")
            await stop_scheduler(scheduler, grace=0.1)
