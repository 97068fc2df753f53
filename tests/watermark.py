"""Waiting for a worker's scan cache to see a change (its watermark polls in the background)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

DEADLINE = 20.0  # generous: a busy machine; the wait ends as soon as the poll has run


async def caught_up(app: Any) -> None:
    """Returns once the cache's watermark has finished a poll that began after this call, so it
    has seen every change committed before it."""
    cache = app.state.profile_cache
    start = time.monotonic()
    while cache.confirmed <= start:
        assert time.monotonic() - start < DEADLINE, "the scan cache's watermark did not poll"
        await asyncio.sleep(0.01)
