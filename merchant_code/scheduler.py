"""Background jobs: APScheduler's AsyncIOScheduler, started and stopped with the app.

Several service instances may run at once, so a job only enqueues work under unique keys and
workers claim rows with FOR UPDATE SKIP LOCKED; running a job in every instance is safe.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from apscheduler.schedulers.asyncio import AsyncIOScheduler


class Job(msgspec.Struct, frozen=True):
    id: str
    func: Callable[[Any], Awaitable[None]]
    seconds: int


def registered_jobs() -> list[Job]:
    """Every periodic job; the issues that add feeds, pushes and cases add theirs here."""
    from merchant_code import auth, profiles

    return [
        Job(id="auth-housekeeping", func=auth.housekeeping, seconds=600),
        Job(id="profiles-drain", func=profiles.drain_job, seconds=2),
    ]


def start_scheduler(state: Any, jobs: list[Job]) -> AsyncIOScheduler:
    from merchant_code.feeds import schedule as feed_schedule

    scheduler = AsyncIOScheduler(timezone="UTC")
    feed_schedule.install(state, scheduler)  # one job per feed source, kept in step with the table
    for job in jobs:
        scheduler.add_job(
            job.func,
            "interval",
            seconds=job.seconds,
            args=[state],
            id=job.id,
            coalesce=True,
            max_instances=1,
        )
    scheduler.start()
    return scheduler
