"""A stand-in for the requests a worker serves while it runs a job on the same event loop."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator


@contextlib.asynccontextmanager
async def heartbeat(every: float = 0.01) -> AsyncIterator[list[float]]:
    """The gaps between the wake-ups of a task that sleeps `every` seconds on this loop (the last
    one up to the moment the block ends): a gap far longer than `every` is the time the loop was
    held up."""
    gaps: list[float] = []
    last = time.perf_counter()

    async def beat() -> None:
        nonlocal last
        while True:
            await asyncio.sleep(every)  # the beat itself is the behaviour measured, not a wait
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(beat())
    try:
        yield gaps
    finally:
        gaps.append(time.perf_counter() - last)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def busy(seconds: float) -> None:
    """CPU work that holds the interpreter as parsing or rendering does (a sleep would let go)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
