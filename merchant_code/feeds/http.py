"""The only way feeds reach the network: an httpx transport that checks every request (redirects
included) against the SSRF rule before any connection is made, and retries what is worth
retrying (connection errors, timeouts, 429 and 5xx, honouring Retry-After) with backoff and
jitter through stamina.

The SSRF rule: a feed URL must be http(s) and every address its host resolves to must be a public
one, unless the source's config says `allow_private: true` (the demo's provider on loopback, a
registry inside the regulator's network). Loopback, link-local (169.254/16, fe80::/10, the cloud
metadata address among them), private, shared, multicast and reserved ranges are refused.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import ipaddress
import socket
from typing import Any

import httpx
import stamina

from merchant_code.feeds import limits as feed_limits
from merchant_code.feeds.base import FeedError

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class Refused(FeedError):
    """A request the SSRF rule does not allow; raised before any connection is made."""


class _Retryable(Exception):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or (isinstance(ip, ipaddress.IPv4Address) and ip in ipaddress.ip_network("100.64.0.0/10"))
    )


async def check_url(url: httpx.URL, allow_private: bool) -> None:
    if url.scheme not in ("http", "https"):
        raise Refused(f"feed URLs must be http or https, not {url.scheme!r}")
    host = url.host
    if not host:
        raise Refused("the feed URL has no host")
    if allow_private:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, url.port or 443, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise Refused(f"cannot resolve {host}: {exc.strerror or exc}") from None
    for info in infos:
        address = str(info[4][0])
        if not _public(address):
            raise Refused(
                f"{host} resolves to {address}, a private, loopback or link-local address;"
                " set allow_private in the source's config if this is intended"
            )


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
        await check_url(request.url, self.allow_private)
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
    transport = GuardedTransport(inner or httpx.AsyncHTTPTransport(), allow_private=allow_private, **kwargs)
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
        follow_redirects=True,
        max_redirects=5,
        headers={"user-agent": "merchant-code feeds"},
    )
