"""A stand-in for the requests a worker serves while it runs a job on the same event loop."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator


@contextlib.asynccontextmanager
async def heartbeat(every: float = 0.01) -> AsyncIterator[list[float]]:
    """The gaps between the wake-ups of a task that sleeps `every` seconds on this loop: a gap far
    longer than `every` is the time the loop was held up."""
    gaps: list[float] = []

    async def beat() -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(every)
            gaps.append(time.perf_counter() - before)

    task = asyncio.create_task(beat())
    try:
        yield gaps
    finally:
        task.cancel()
