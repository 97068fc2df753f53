"""Whether this worker can reach the database, known without a round trip.

The scan cache's poller (profile_cache.Watermark) and the scheduler's jobs report what they see;
requests, /readyz and the jobs consult it. A database that goes away is logged once ("database
unreachable: ...") and once when it is back ("database reachable again after N s"), never a
traceback per job every two seconds. One state per worker process, as the pools are.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

log = logging.getLogger("merchant_code.db_health")

# what a request that needs the database is told while it is unreachable (503), and when to retry
UNREACHABLE = "the database is unreachable; try again in a moment"
RETRY_AFTER = 2

# what a statement raises when its connection is lost under it (the server stopped or crashed, the
# socket reset): a request then gets 503, as one that could not connect at all, not a 500.
# InternalClientError: a server shutting down sends every idle connection a FATAL error before it
# closes the socket; a connection handed out in between fails its first statement with "cannot
# switch to state 15; another operation (2) is in progress" (tests/test_outage.py found it)
LOST_UNDER_QUERY: tuple[type[Exception], ...] = (
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InternalClientError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)
# what a dead or unreachable server raises: refused or reset sockets, connect timeouts, a closed
# connection used, and the above
LOST: tuple[type[BaseException], ...] = (OSError, TimeoutError, asyncpg.InterfaceError, *LOST_UNDER_QUERY)


class Health:
    __slots__ = ("down_since", "down_wall", "reason")

    def __init__(self) -> None:
        self.down_since: float | None = None  # monotonic
        self.down_wall: datetime.datetime | None = None
        self.reason = ""

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def lost(self, exc: BaseException) -> None:
        if self.down_since is not None:
            return
        self.down_since = time.monotonic()
        self.down_wall = datetime.datetime.now(datetime.UTC)
        self.reason = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
        log.warning("database unreachable: %s", self.reason)

    def reached(self) -> None:
        if self.down_since is None:
            return
        seconds = time.monotonic() - self.down_since
        self.down_since = self.down_wall = None
        self.reason = ""
        log.warning("database reachable again after %.0f s", seconds)


state = Health()

# polls that time out in a row before a slow database counts as unreachable: one slow poll is a
# busy machine or a full pool, not an outage (a server that is gone refuses at once)
TIMEOUTS_BEFORE_DOWN = 3


def is_lost(exc: BaseException) -> bool:
    """A connection refused, reset or closed under us; not a timeout (TimeoutError is an OSError):
    a timeout alone may be a busy machine, and only the poller's run of them says "down"."""
    return isinstance(exc, LOST) and not isinstance(exc, TimeoutError)


def reset() -> None:
    """A new app in this process (tests) starts from "reachable"."""
    global state
    state = Health()


class PoolFloor(logging.Filter):
    """asyncpg's pools (0.32 on) reconnect in the background to keep `min_size` connections, and
    log a warning with a traceback at each failed try (five pools per worker, again and again
    while the server is down). A try that failed because the server cannot be reached says what
    this module says in one line: it flips the state instead of being logged; any other failure
    (a refused login, say) is logged as asyncpg logs it."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or not record.getMessage().startswith("Failed to restore"):
            return True
        if is_lost(exc):
            state.lost(exc)
            return False
        # a connect that timed out: said once the watermark's polls time out too, not before
        return not (isinstance(exc, TimeoutError) and state.down)


def quiet_pool_floor() -> None:
    pool_log = logging.getLogger("asyncpg.pool")
    if not any(isinstance(f, PoolFloor) for f in pool_log.filters):
        pool_log.addFilter(PoolFloor())


def guarded(func: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
    """A scheduler job that stays silent while the database is known to be down (it is skipped),
    and whose first lost connection flips the state (one line) instead of a traceback."""

    @functools.wraps(func)
    async def job(arg: Any) -> None:
        if state.down:
            return
        try:
            await func(arg)
        except asyncio.CancelledError:
            raise
        except LOST as exc:
            if not is_lost(exc):
                raise  # a job that timed out: the scheduler logs it as any failed job
            state.lost(exc)

    return job
