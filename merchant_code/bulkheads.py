"""Each kind of work has its own bounded share, so that one kind flooding in cannot starve
another: scans (the scan pool), the public API with its searches (here), writes (body_guard's
write slots) and background jobs (the jobs pool, and `load.pause_if_busy` between their batches).

The public API is the kind a client can make expensive: a search may take a good part of a
second of database time. Each worker runs at most `SEARCH_CONCURRENCY` of its requests at once,
each on a connection of the search pool; one more waits at most `SEARCH_WAIT_SECONDS` for a slot
and is then refused 503 with Retry-After. Refused at once is what keeps the scans' event loop and
connections free; queued, a flood would make every searcher wait for seconds anyway.
"""

from __future__ import annotations

import asyncio

from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from merchant_code.errors import Busy


class SearchAdmission(ASGIMiddleware):
    """The public API's share of a worker: a slot within `search_wait_seconds`, or 503."""

    scopes = ("http",)  # type: ignore[assignment]

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        state = scope["litestar_app"].state
        slots: asyncio.Semaphore = state.search_slots
        try:
            async with asyncio.timeout(state.settings.search_wait_seconds):
                await slots.acquire()
        except TimeoutError:
            raise Busy("too many searches at once; try again in a moment", retry_after=1) from None
        try:
            await next_app(scope, receive, send)
        finally:
            slots.release()
