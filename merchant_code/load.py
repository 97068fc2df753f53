"""The load signal background jobs yield to: long jobs (profile drains, exports, feed pulls,
policy sends) call `pause_if_busy()` between batches, and pause while this worker's requests wait
for their share (bulkheads.py). Jobs run in the worker's own event loop, beside its requests, so
the signal is the worker's own: every write or search slot taken, or the request or scan pool
with no connection left to give.

The app names what to watch in its lifespan (`watch`); with nothing watched (the CLI's commands,
jobs run by tests without an app) jobs never pause.
"""

from __future__ import annotations

import asyncio
from typing import Any

# how long a job waits, at most, between two batches: under constant load it still gets its
# work done, only slower
PAUSE_SECONDS = 0.5
STEP_SECONDS = 0.05

_watched: list[Any] = []


def watch(state: Any) -> None:
    """Jobs in this process yield to the requests of this app state (write_slots, search_slots,
    pool, scan_pool)."""
    _watched.append(state)


def unwatch(state: Any) -> None:
    if state in _watched:
        _watched.remove(state)


def requests_waiting() -> bool:
    for state in _watched:
        if state.write_slots.locked() or state.search_slots.locked():
            return True
        if any(_exhausted(getattr(state, name, None)) for name in ("pool", "scan_pool")):
            return True
    return False


def _exhausted(pool: Any) -> bool:
    return pool is not None and pool.get_size() >= pool.get_max_size() and pool.get_idle_size() == 0


async def pause_if_busy() -> bool:
    """Pause while requests wait (at most PAUSE_SECONDS); whether it paused."""
    if not requests_waiting():
        return False
    loop = asyncio.get_running_loop()
    until = loop.time() + PAUSE_SECONDS
    # polled: the signal is a state of pools and semaphores, which no event announces
    while requests_waiting() and loop.time() < until:  # noqa: ASYNC110
        await asyncio.sleep(STEP_SECONDS)
    return True
