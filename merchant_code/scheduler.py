"""Background jobs: APScheduler's AsyncIOScheduler, started and stopped with the app.

Several service instances may run at once, so a job only enqueues work under unique keys and
workers claim rows with FOR UPDATE SKIP LOCKED; running a job in every instance is safe.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import msgspec
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from merchant_code import db_health


class Job(msgspec.Struct, frozen=True):
    id: str
    func: Callable[[Any], Awaitable[None]]
    seconds: int
    at_start: bool = False  # also run once as soon as the scheduler starts


def registered_jobs() -> list[Job]:
    """Every periodic job; the issues that add feeds, pushes and cases add theirs here."""
    from merchant_code import audit_checkpoints, auth, cases, exports, policies, profiles
    from merchant_code.feeds import quality_cases

    return [
        Job(id="auth-housekeeping", func=auth.housekeeping, seconds=600),
        Job(id="profiles-drain", func=profiles.drain_job, seconds=2),
        Job(id="policies-due", func=policies.due_job, seconds=5),
        Job(id="cases-intake", func=cases.intake_job, seconds=30),
        Job(id="policies-reminders", func=policies.reminder_job, seconds=3600, at_start=True),
        Job(id="exports-run", func=exports.run_job, seconds=10),
        # each feed source's data-quality report; a failing one raises a case for its owner
        Job(id="feeds-quality", func=quality_cases.quality_job, seconds=quality_cases.JOB_SECONDS),
        # signed heads of the audit chain: a tail cut after one is found (audit_checkpoints)
        Job(
            id="audit-checkpoint",
            func=audit_checkpoints.checkpoint_job,
            seconds=audit_checkpoints.CHECKPOINT_SECONDS,
            at_start=True,
        ),
    ]


def jobs_state(pool: Any, settings: Any) -> Any:
    """What a job sees as `state`: the jobs' own pool (never the requests'), the settings, and the
    slots that bound how many feed sources this worker pulls at once."""
    return SimpleNamespace(
        pool=pool, settings=settings, feed_slots=asyncio.Semaphore(settings.feed_concurrency)
    )


def start_scheduler(state: Any, jobs: list[Job]) -> AsyncIOScheduler:
    from merchant_code.feeds import schedule as feed_schedule

    scheduler = AsyncIOScheduler(timezone="UTC")
    feed_schedule.install(state, scheduler)  # one job per feed source, kept in step with the table
    for job in jobs:
        scheduler.add_job(
            # skipped while the database is known to be down; a first lost connection flips that
            # state in one line (db_health), never a traceback every few seconds
            db_health.guarded(job.func),
            "interval",
            seconds=job.seconds,
            args=[state],
            id=job.id,
            coalesce=True,
            max_instances=1,
            **({"next_run_time": datetime.datetime.now(datetime.UTC)} if job.at_start else {}),
        )
    scheduler.start()
    return scheduler
