"""Background jobs: APScheduler's AsyncIOScheduler, started and stopped with the app.

Several service instances may run at once, so a job only enqueues work under unique keys and
workers claim rows with FOR UPDATE SKIP LOCKED; running a job in every instance is safe.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
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
    from merchant_code import audit, audit_checkpoints, auth, cases, exports, policies, profiles
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
        # chains the audit rows committed since the last seal (one sealer at a time: audit)
        Job(id="audit-seal", func=audit.seal_job, seconds=audit.SEAL_SECONDS, at_start=True),
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


# how long a stopping worker lets running jobs finish before it cancels them; with the pools'
# close this stays well inside granian's workers_kill_timeout (commands.serve)
STOP_GRACE_SECONDS = 3.0
# how long cancelled jobs get to unwind (roll back, give their connection back)
UNWIND_SECONDS = 1.5


async def stop_scheduler(scheduler: AsyncIOScheduler, grace: float = STOP_GRACE_SECONDS) -> None:
    """Stop starting jobs, let the running ones finish for `grace` seconds, cancel the rest and
    wait for them to unwind, so that no job holds a pooled connection when the pools close.

    APScheduler's own shutdown cancels every running job at once, whatever `wait` says (its
    AsyncIOExecutor cannot wait): a drain or a feed pull then died mid-query with a traceback,
    and the pools' close waited on connections the dying jobs still held.
    """
    scheduler.pause()
    executor = scheduler._lookup_executor("default")  # the one executor start_scheduler made
    running = {f for f in getattr(executor, "_pending_futures", ()) if not f.done()}
    if running:
        _, running = await asyncio.wait(running, timeout=grace)
    scheduler.shutdown(wait=False)  # cancels what is left
    if running:
        await asyncio.wait(running, timeout=UNWIND_SECONDS)


class _StoppedJobs(logging.Filter):
    """A job cancelled because its worker stops is no error to show with a traceback: one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError):
            record.msg = 'Job "%s" cut short: the worker is stopping'
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = record.exc_text = None
        return True


class _Overlaps(logging.Filter):
    """A run skipped because the last one still runs (a drain working through a push), or
    started late on a busy machine, is how interval jobs behave under load, not a warning: shown
    at log level debug only (two lines a second per job otherwise)."""

    QUIET = ("maximum number of running instances", "was missed by")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and any(text in record.msg for text in self.QUIET):
            return logging.getLogger("apscheduler").isEnabledFor(logging.DEBUG)
        return True


def quiet_scheduler(log_level: str) -> None:
    """APScheduler logs every run at INFO (two lines a run, about a hundred a minute): keep that
    for MERCHANT_CODE_LOG_LEVEL=debug; its warnings and errors show at any level."""
    apscheduler = logging.getLogger("apscheduler")
    apscheduler.setLevel(logging.DEBUG if log_level == "debug" else logging.WARNING)
    executors = logging.getLogger("apscheduler.executors.default")
    if not any(isinstance(f, _StoppedJobs) for f in executors.filters):
        executors.addFilter(_StoppedJobs())
    for name in ("apscheduler.scheduler", "apscheduler.executors.default"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Overlaps) for f in logger.filters):
            logger.addFilter(_Overlaps())
