"""How much one feed source may make this process hold, and the checks that keep it there.

A feed is outside input: a 1 KB zip can declare a gigabyte, a gzip response can unpack to a
thousand times its size. So every page is read as a stream against two limits of the source
(runner keys of `feed_source.config`, defaults below):

- `max_bytes`: the most one page may be, after its Content-Encoding, and the most an archive's
  members may unpack to, together;
- `max_ratio`: the most a compressed body or member may unpack to per compressed byte.

Reading stops when a limit is passed; nothing is inflated first and measured after.

The runner applies a source's limits for the length of its run (`applied`); the guarded transport
and the zip reader take them from there (`current`): they sit behind interfaces with no room for
them (httpx's transport, a module's `parse(page, config)`), and `asyncio.to_thread` carries the
context into the thread that parses.
"""

from __future__ import annotations

import contextlib
import contextvars
import zlib
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import httpx
import msgspec

from merchant_code.feeds.base import FeedError

# a real feed page is a few MB to a few hundred (a city's LIVES zip unpacks to ~200 MB)
MAX_BYTES = 512 * 2**20
# Real CSV, JSON and XML compress 5-15:1 (the bench's LIVES zip: 4.8-11.5 with deflate; its most
# repetitive file reaches 14:1 with bzip2 and 48:1 with xz). Deflate cannot pass 1032:1 and a
# bomb is built near that or far beyond it (bzip2 and xz: 10^5-10^6:1), so 200 lets the most
# repetitive real file through four times over and still stops every bomb early
MAX_RATIO = 200.0
# no ratio is judged below this much unpacked: a small, very repetitive file costs nothing
RATIO_FLOOR = 2**20
CHUNK = 2**16  # the most one decompression step gives at once
# what the transport asks for: the encodings `bounded` can unpack with a limit
ACCEPT_ENCODING = "gzip, deflate"
KEEP_RAW = 4096  # bytes of a rejected record kept in quarantine


class Limits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    max_bytes: Annotated[int, msgspec.Meta(ge=1024)] = MAX_BYTES
    max_ratio: Annotated[float, msgspec.Meta(ge=2)] = MAX_RATIO


KEYS = tuple(Limits.__struct_fields__)


class TooLarge(FeedError):
    """A page or member over its source's limits: the run stops and says which limit."""


# Limits is frozen: the one default is never changed in place
_current: contextvars.ContextVar[Limits] = contextvars.ContextVar("feed_limits", default=Limits())  # noqa: B039


def from_config(options: dict[str, Any]) -> Limits:
    """The limits a source's config sets (msgspec.ValidationError names a bad one)."""
    return msgspec.convert({k: options[k] for k in KEYS if k in options}, Limits)


def current() -> Limits:
    return _current.get()


@contextlib.contextmanager
def applied(limits: Limits) -> Iterator[None]:
    token = _current.set(limits)
    try:
        yield
    finally:
        _current.reset(token)


def over_size(what: str, limits: Limits) -> TooLarge:
    return TooLarge(
        f"{what} is over max_bytes = {limits.max_bytes:,} bytes;"
        " raise max_bytes in the source's config if it is genuine"
    )


def over_ratio(what: str, unpacked: int, packed: int, limits: Limits) -> TooLarge:
    return TooLarge(
        f"{what} unpacks {unpacked:,} bytes from {packed:,}, over max_ratio = {limits.max_ratio:g}:1"
        " (a decompression bomb?); raise max_ratio in the source's config if it is genuine"
    )


def check_ratio(what: str, unpacked: int, packed: int, limits: Limits) -> None:
    if unpacked > RATIO_FLOOR and unpacked > limits.max_ratio * max(packed, 1):
        raise over_ratio(what, unpacked, packed, limits)


def clip(raw: bytes) -> bytes:
    """A rejected record as quarantine keeps it: whole up to KEEP_RAW bytes, else its start and a
    marker (one line of a bomb once made a reject row PostgreSQL refused, over 1 GB)."""
    if len(raw) <= KEEP_RAW:
        return raw
    return raw[:KEEP_RAW] + f"\n[... cut: the first {KEEP_RAW:,} of {len(raw):,} bytes kept]".encode()


# --- HTTP responses ----------------------------------------------------------------------------


class _Inflate:
    """gzip or deflate, unpacked at most CHUNK bytes a step; `consumed` counts compressed bytes."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        gzip = encoding in ("gzip", "x-gzip")
        self.inflate = zlib.decompressobj(zlib.MAX_WBITS | 16 if gzip else zlib.MAX_WBITS)
        # servers send HTTP "deflate" raw as often as in its zlib wrapper: try one, then the other
        self.raw_fallback = not gzip
        self.consumed = 0

    def feed(self, data: bytes) -> Iterator[bytes]:
        while data and not self.inflate.eof:
            try:
                piece = self.inflate.decompress(data, CHUNK)
            except zlib.error as exc:
                if not self.raw_fallback:
                    raise FeedError(f"the response's {self.encoding} body is damaged: {exc}") from None
                self.inflate, self.raw_fallback = zlib.decompressobj(-zlib.MAX_WBITS), False
                continue
            self.raw_fallback = False
            self.consumed += len(data) - len(self.inflate.unconsumed_tail)
            data = self.inflate.unconsumed_tail
            yield piece

    def end(self) -> bytes:
        return self.inflate.flush()


class _Bounded(httpx.AsyncByteStream):
    def __init__(
        self,
        inner: httpx.AsyncByteStream,
        inflate: _Inflate | None,
        what: str,
        limits: Limits,
        refusal: FeedError | None = None,
    ) -> None:
        self.inner, self.inflate, self.what, self.limits = inner, inflate, what, limits
        # raised on the first read, so the response is closed by whoever reads it (httpx, the
        # transport's retry) as with any other error reading a body
        self.refusal = refusal

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.refusal is not None:
            raise self.refusal
        wire = unpacked = 0
        async for chunk in self.inner:
            wire += len(chunk)
            if wire > self.limits.max_bytes:
                raise over_size(self.what, self.limits)
            if self.inflate is None:
                yield chunk
                continue
            for piece in self.inflate.feed(chunk):
                unpacked += len(piece)
                self._check(unpacked)
                yield piece
        if self.inflate is not None:
            piece = self.inflate.end()
            self._check(unpacked + len(piece))
            yield piece

    def _check(self, unpacked: int) -> None:
        assert self.inflate is not None
        if unpacked > self.limits.max_bytes:
            raise over_size(f"{self.what}, unpacked,", self.limits)
        check_ratio(self.what, unpacked, self.inflate.consumed, self.limits)

    async def aclose(self) -> None:
        await self.inner.aclose()


def bounded(response: httpx.Response, request: httpx.Request) -> httpx.Response:
    """The response, its body now read (and unpacked, when it has a Content-Encoding) against the
    current limits: the body ends in TooLarge at the limit, so `response.content` never holds
    more. A Content-Length over the limit is refused before any of the body is read."""
    limits = current()
    what = f"the response from {request.url.copy_with(query=None)}"
    refusal: FeedError | None = None
    length = response.headers.get("content-length", "")
    if length.isascii() and length.isdigit() and int(length) > limits.max_bytes:
        refusal = over_size(f"{what} (Content-Length {int(length):,})", limits)
    encoding = response.headers.get("content-encoding", "").strip().lower()
    inflate: _Inflate | None = None
    if encoding in ("gzip", "x-gzip", "deflate"):
        inflate = _Inflate(encoding)
        # unpacked here, so httpx must not unpack it again
        del response.headers["content-encoding"]
        response.headers.pop("content-length", None)
    elif encoding not in ("", "identity"):
        refusal = FeedError(f"{what} has Content-Encoding {encoding[:40]!r}; only {ACCEPT_ENCODING} is read")
    assert isinstance(response.stream, httpx.AsyncByteStream)
    response.stream = _Bounded(response.stream, inflate, what, limits, refusal)
    return response
