"""The only way feeds reach the network: an httpx transport that checks every request (redirects
included) against the SSRF rule, and retries what is worth
retrying (connection errors, timeouts, 429 and 5xx, honouring Retry-After) with backoff and
jitter through stamina.

The SSRF rule (`ssrf.py`): a URL must be http(s) and every address its host resolves to must be
a public one, unless the source's config says `allow_private: true` (the demo's provider on
loopback, a registry inside the regulator's network). The check is made again on each hop and
held at the connection itself, which goes to the address that was checked (`CheckedTransport`).
"""

from __future__ import annotations

import datetime
import email.utils
from typing import Any

import httpx
import stamina

from merchant_code.feeds import limits as feed_limits
from merchant_code.feeds import ssrf
from merchant_code.feeds.ssrf import CheckedTransport, Refused, check_url

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
__all__ = ["GuardedTransport", "Refused", "check_url", "client", "retry_after_seconds"]


class _Retryable(Exception):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def retry_after_seconds(value: str | None, cap: float, now: datetime.datetime | None = None) -> float | None:
    """A Retry-After header in seconds, capped: delta-seconds or an HTTP-date (RFC 9110 10.2.3;
    a date already past is 0). None when absent or unreadable."""
    value = (value or "").strip()
    if value.isascii() and value.isdigit():  # not "²", which isdigit() too
        return min(float(value), cap)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    wait = (when - (now or datetime.datetime.now(datetime.UTC))).total_seconds()
    return min(max(wait, 0.0), cap)


def _retry_hook(exc: Exception) -> bool | float:
    """stamina's backoff hook: whether to retry, or how long to wait (Retry-After)."""
    if isinstance(exc, _Retryable):
        return retry_after_seconds(exc.response.headers.get("retry-after"), 60.0) or True
    return isinstance(exc, httpx.TransportError) and not isinstance(exc, Refused)


class GuardedTransport(httpx.AsyncBaseTransport):
    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        *,
        allow_private: bool,
        attempts: int = 4,
        retry_seconds: float = 30.0,
    ) -> None:
        self.inner = inner
        self.allow_private = allow_private
        self.attempts = attempts
        self.retry_seconds = retry_seconds

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        # the checked transport resolves and checks names at the connection; another one (a
        # test's) has them resolved and checked here
        resolver = None if isinstance(self.inner, CheckedTransport) else ssrf.system_resolver
        await check_url(request.url, self.allow_private, resolver=resolver)
        last: httpx.Response | None = None
        try:
            async for attempt in stamina.retry_context(
                on=_retry_hook,
                attempts=self.attempts,
                timeout=self.retry_seconds,
                wait_initial=0.2,
                wait_max=10.0,
            ):
                with attempt:
                    request.headers["accept-encoding"] = feed_limits.ACCEPT_ENCODING
                    response = await self.inner.handle_async_request(request)
                    # every body, error pages and redirects included, is read against the limits
                    response = feed_limits.bounded(response, request)
                    if response.status_code in RETRY_STATUSES:
                        try:
                            await response.aread()
                        finally:
                            await response.aclose()
                        last = response
                        raise _Retryable(response)
                    return response
        except _Retryable:
            assert last is not None
            return last  # retries spent: the module sees the last answer and fails the run with it
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        await self.inner.aclose()


def client(
    allow_private: bool,
    *,
    inner: httpx.AsyncBaseTransport | None = None,
    timeout: float = 20.0,
    **kwargs: Any,
) -> httpx.AsyncClient:
    """A client for one source's run: per-request timeouts, redirects followed (each hop checked)."""
    inner = inner or CheckedTransport(allow_private=allow_private)
    transport = GuardedTransport(inner, allow_private=allow_private, **kwargs)
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
        follow_redirects=True,
        max_redirects=5,
        headers={"user-agent": "merchant-code feeds"},
    )
