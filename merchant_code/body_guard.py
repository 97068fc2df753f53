"""Request bodies are read whole, with a size bound and a deadline, before anything else runs.

A body that trickles in (ten clients sending one byte every ten seconds) must not hold any of
the service's resources while it does: this middleware is the outermost one, so no connection
is taken, no session looked up and no handler started until the body is complete. The body is
then replayed to Litestar, which reads it as if from the client.

The deadline grows with what arrives: `body_seconds`, plus one second per `body_min_rate` bytes
received, so a large photo on a slow phone link gets through and a trickle does not.
"""

from __future__ import annotations

import asyncio

from litestar.handlers import HTTPRouteHandler
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, ReceiveMessage, Scope, Send

from merchant_code.errors import BodyTooLarge, Busy, RequestTimeout

# methods whose requests carry no body the service reads: passed on untouched (the scan's path)
NO_BODY = frozenset({"GET", "HEAD", "OPTIONS"})


class BodyGuard(ASGIMiddleware):
    scopes = ("http",)  # type: ignore[assignment]

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        if scope.get("method") in NO_BODY:
            await next_app(scope, receive, send)
            return
        handler = scope["route_handler"]
        if not isinstance(handler, HTTPRouteHandler):
            await next_app(scope, receive, send)
            return
        settings = scope["litestar_app"].state.settings
        limit = handler.resolve_request_max_body_size()
        body = await read_body(scope, receive, limit, settings.body_seconds, settings.body_min_rate)
        if body is None:
            return  # the client went away before its body was complete: nobody to answer
        # a bounded number of writes at once per worker: two hundred sent together would each be
        # a task ready to run, and a scan would wait its turn behind all of them
        slots: asyncio.Semaphore = scope["litestar_app"].state.write_slots
        try:
            async with asyncio.timeout(settings.acquire_seconds):
                await slots.acquire()
        except TimeoutError:
            raise Busy("too many writes at once; try again in a moment", retry_after=1) from None
        try:
            await next_app(scope, _replay(body, receive), send)
        finally:
            slots.release()


async def read_body(
    scope: Scope, receive: Receive, limit: int | None, grace: float, rate: int
) -> bytes | None:
    declared = _content_length(scope)
    if limit is not None and declared is not None and declared > limit:
        raise BodyTooLarge(f"the body may be at most {limit} bytes; this one says it has {declared}")
    loop = asyncio.get_running_loop()
    start = loop.time()
    chunks: list[bytes] = []
    received = 0
    while True:
        left = start + grace + received / rate - loop.time()
        try:
            if left <= 0:
                raise TimeoutError
            async with asyncio.timeout(left):
                message = await receive()
        except TimeoutError:
            raise RequestTimeout(
                f"the request body did not arrive in time ({received} bytes in"
                f" {loop.time() - start:.0f} s); send it at once"
            ) from None
        if message["type"] != "http.request":
            return None  # the client went away
        chunk = message.get("body", b"")
        received += len(chunk)
        if limit is not None and received > limit:
            raise BodyTooLarge(f"the body may be at most {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """The whole body as one message, then whatever the client sends next (a disconnect)."""
    sent = False

    async def replay() -> ReceiveMessage:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
