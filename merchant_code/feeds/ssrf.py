"""The SSRF rule, held where connections are made: feeds, channels and webhooks reach only public
addresses unless told `allow_private`.

Checking a URL's name and then letting the HTTP library resolve it again is not enough: a name
can answer a public address to the check and 127.0.0.1 to the connection (DNS rebinding). So
`CheckedTransport` resolves a name once, in its network backend (`CheckedBackend.connect_tcp`,
which httpcore calls for every new connection), refuses the connection if any address is not
public, and connects to a checked address itself; TLS still verifies the certificate against
the name (httpcore passes the URL's host as the server name), so https works unchanged.

An IPv6 address that carries an IPv4 one (IPv4-mapped, 6to4, Teredo, NAT64) is judged by the
IPv4 address it leads to as well.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

import httpcore
import httpx

from merchant_code.feeds.base import FeedError

# answers the addresses a name stands for; tests pass their own (a name that rebinds)
Resolver = Callable[[str, int], Awaitable[list[str]]]
SocketOption = tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]

_SHARED = IPv4Network("100.64.0.0/10")  # carrier-grade NAT: inside someone's network
# the well-known NAT64 prefix: a DNS64 resolver on an IPv6-only network answers every IPv4-only
# name with it, so it is judged by the IPv4 address it wraps alone (Python calls it reserved)
_NAT64 = IPv6Network("64:ff9b::/96")
STORE_RESOLVE_SECONDS = 5.0


class Refused(FeedError):
    """A request the SSRF rule does not allow; raised before any connection is made. `private`:
    refused for where the host leads (what `allow_private` allows), not for the URL's form."""

    def __init__(self, message: str, *, private: bool = False) -> None:
        super().__init__(message)
        self.private = private


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _kind(ip: IPv4Address | IPv6Address) -> str | None:
    """What keeps one address from being public, or None."""
    for kind, bad in (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("unspecified", ip.is_unspecified),
        ("shared (CGNAT)", isinstance(ip, IPv4Address) and ip in _SHARED),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    ):
        if bad:
            return kind
    return None


def refusal(address: str) -> str | None:
    """Why `address` may not be connected to ("a loopback address"), or None for a public one."""
    try:
        ip = ip_address(address.split("%", 1)[0])
    except ValueError:
        return "not an IP address"
    if isinstance(ip, IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip in _NAT64:
            ip = IPv4Address(int(ip) & 0xFFFFFFFF)
        else:
            for wrapped in (ip.sixtofour, *(ip.teredo or ())):
                if wrapped is not None and (kind := _kind(wrapped)):
                    return f"an address wrapping {wrapped}, {_a(kind)} address"
    kind = _kind(ip)
    return f"{_a(kind)} address" if kind else None


def _a(kind: str) -> str:
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


def is_public(address: str) -> bool:
    return refusal(address) is None


def _literal(host: str) -> bool:
    try:
        ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _target(url: httpx.URL | str) -> tuple[str, int]:
    """The host (IDNA-encoded, as it is connected to) and port of an http(s) URL, or Refused."""
    try:
        url = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise Refused(f"not a usable URL: {exc}") from None
    if url.scheme not in ("http", "https"):
        said = f", not {url.scheme!r}" if url.scheme else ""
        raise Refused(f"URLs must be http or https{said}")
    host = url.raw_host.decode("ascii")
    if not host:
        raise Refused("the URL has no host")
    name = host.removesuffix(".")  # a fully qualified name may end with its root's dot
    if not _literal(host) and (len(name) > 253 or any(not 0 < len(label) <= 63 for label in name.split("."))):
        # no DNS name is longer (the resolver would refuse to encode it)
        raise Refused("the URL's host is not a valid name (labels of 1 to 63 characters, 253 in all)")
    return host, url.port or (443 if url.scheme == "https" else 80)


async def resolve_checked(host: str, port: int, allow_private: bool, resolver: Resolver) -> list[str]:
    """The addresses `host` stands for (a name resolved once), every one of them checked.
    Refused if any is not public; OSError (or TimeoutError from the caller) if resolving fails."""
    addresses = [host] if _literal(host) else await resolver(host, port)
    if not addresses:
        raise socket.gaierror(socket.EAI_NONAME, "no address")
    if not allow_private:
        for address in addresses:
            if why := refusal(address):
                said = f"{host} is" if address == host else f"{host} resolves to {address},"
                raise Refused(f"{said} {why}", private=True)
    return addresses


async def check_url(
    url: httpx.URL | str, allow_private: bool, *, resolver: Resolver | None = system_resolver
) -> None:
    """Refused unless `url` is http(s) and (without `allow_private`) its host is a public address
    or a name every address of which is. Without a resolver names are left to the connection."""
    host, port = _target(url)
    if allow_private or (resolver is None and not _literal(host)):
        return
    try:
        await resolve_checked(host, port, allow_private, resolver or system_resolver)
    except OSError as exc:
        raise Refused(f"cannot resolve {host}: {exc.strerror or exc}") from None


async def check_stored_url(url: str, allow_private: bool, resolver: Resolver = system_resolver) -> None:
    """The check made when a URL is stored (a source, a channel, a subscription): a bad scheme, a
    private address or a name answering one is refused at once. A name that does not resolve
    now is kept (a registry's name may appear later): every connection is checked again."""
    host, port = _target(url)
    if allow_private:
        return
    try:
        async with asyncio.timeout(STORE_RESOLVE_SECONDS):
            await resolve_checked(host, port, allow_private, resolver)
    except (OSError, TimeoutError):
        return


class CheckedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with the SSRF rule: resolve once, check every address, connect
    to a checked one (in the resolver's order, the next if one fails)."""

    def __init__(
        self,
        *,
        allow_private: bool,
        resolver: Resolver = system_resolver,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.allow_private = allow_private
        self.resolver = resolver
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                addresses = await resolve_checked(host, port, self.allow_private, self.resolver)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} took longer than {timeout} s") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc.strerror or exc}") from None
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # resolve_checked never answers no address
        raise failure

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[SocketOption] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise Refused("outside systems are reached over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class CheckedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport (pooling, HTTP/1.1, TLS) over `CheckedBackend`."""

    def __init__(
        self,
        *,
        allow_private: bool,
        resolver: Resolver = system_resolver,
        backend: httpcore.AsyncNetworkBackend | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        context = httpx.create_ssl_context(verify=verify)
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
        super().__init__(verify=context, limits=limits)
        # httpx takes no network backend, so its pool is replaced by the same pool over ours
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=CheckedBackend(allow_private=allow_private, resolver=resolver, inner=backend),
        )
