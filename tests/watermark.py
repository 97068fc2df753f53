"""Waiting for a worker's scan cache to see a change (its watermark polls in the background)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests import waiting

# a poll runs every few hundredths of a second in the suite's settings; on a quiet machine a few
# seconds is generous, and waiting.scaled stretches it on a busy one
QUIET_SECONDS = 5.0


def deadline() -> float:
    """Seconds a wait on the watermark may take on this machine, now."""
    return waiting.scaled(QUIET_SECONDS)


async def caught_up(app: Any) -> None:
    """Returns once the cache's watermark has finished a poll that began after this call, so it
    has seen every change committed before it."""
    cache = app.state.profile_cache
    start = time.monotonic()
    limit = deadline()
    while cache.confirmed <= start:
        assert time.monotonic() - start < limit, f"the watermark did not poll within {limit:.0f} s"
        await asyncio.sleep(0.01)
