"""The public API's rate per client address: `PUBLIC_RATE` requests a minute, a token bucket
(the whole minute's worth may come at once) kept in the serve command's shared table, so that
it holds whatever the number of workers (in a process-local one without it). Every answer
carries the rate-limit headers of the IETF draft; past the rate, 429 with Retry-After."""

from __future__ import annotations

import math
from typing import Any

from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from merchant_code.errors import TooManyRequests

PUBLIC_RATE = 600  # a minute, per client address
WINDOW = 60


class PublicLimit(ASGIMiddleware):
    scopes = ("http",)  # type: ignore[assignment]

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        gate: Any = scope["litestar_app"].state.public_gate
        address = scope.get("state", {}).get("client_address") or "unknown"
        if not gate.allow(address):
            raise TooManyRequests(
                "too many requests from this address: wait as Retry-After says",
                retry_after=gate.retry_after(address),
            )
        left = gate.tokens(address)
        headers = [
            (b"ratelimit-limit", str(PUBLIC_RATE).encode()),
            (b"ratelimit-remaining", str(int(left)).encode()),
            (b"ratelimit-reset", str(math.ceil((gate.burst - left) / gate.rate)).encode()),
            (b"ratelimit-policy", f"{PUBLIC_RATE};w={WINDOW}".encode()),
        ]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *headers]
            await send(message)

        await next_app(scope, receive, send_with_headers)
