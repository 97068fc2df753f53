"""Waits that scale with the machine: poll a condition until a deadline, never sleep and hope.

A deadline is `scaled(seconds)`: the seconds a test would need on a quiet machine, multiplied by
the slowness factor. `MERCHANT_CODE_TEST_SLOWNESS` sets the factor (say 3 on a slow CI runner);
unset, it is read from the machine at the moment of the wait: the load average per core (at
least 1), so the same suite passes beside a CPU hog or under `pytest -n`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable

SLOWNESS_VARIABLE = "MERCHANT_CODE_TEST_SLOWNESS"
# a busy machine is given more time, but a wait that cannot succeed still ends
MOST_SLOWNESS = 8.0
POLL_SECONDS = 0.05


def slowness() -> float:
    given = os.environ.get(SLOWNESS_VARIABLE)
    if given:
        try:
            factor = float(given)
        except ValueError:
            raise ValueError(f"{SLOWNESS_VARIABLE} must be a number, not {given!r}") from None
        if not factor > 0:
            raise ValueError(f"{SLOWNESS_VARIABLE} must be above 0, not {given!r}")
        return factor
    try:
        per_core = os.getloadavg()[0] / (os.cpu_count() or 1)
    except OSError:
        return 1.0
    return min(MOST_SLOWNESS, max(1.0, per_core))


def scaled(seconds: float) -> float:
    """`seconds` on a quiet machine, stretched by the slowness factor."""
    return seconds * slowness()


def wait_for(check: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll `check` until it holds; fail naming `what` after `scaled(seconds)`."""
    deadline = time.monotonic() + scaled(seconds)
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {scaled(seconds):.0f}s waiting for {what}")
        time.sleep(POLL_SECONDS)  # the poll interval of a wait on a condition, not a synchronisation


async def until(check: Callable[[], Awaitable[bool]], seconds: float, what: str) -> None:
    """`wait_for` for a check that awaits."""
    deadline = time.monotonic() + scaled(seconds)
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {scaled(seconds):.0f}s waiting for {what}")
        await asyncio.sleep(POLL_SECONDS)
