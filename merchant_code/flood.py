"""A flood of scans from one address is limited without slowing anyone else: a token bucket per
client address, in each worker process, checked before anything else is done for the request.

Cheap by construction (a dict lookup and a little arithmetic, no lock: one event loop per
process), so the scan's hot path pays about a microsecond for it. Sticker pages and images are
scanned by people one at a time; an address that sends more than `rate` a second on average
(with `burst` to spare, for a shop assistant scanning a stack of stickers, or a building behind
one NAT) is answered 429 with Retry-After until its bucket refills.
"""

from __future__ import annotations

import time

MAX_ADDRESSES = 200_000  # past this many, the table starts over (an attack on the table itself)


class FloodGate:
    __slots__ = ("buckets", "burst", "rate")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.buckets: dict[str, list[float]] = {}

    def allow(self, address: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        bucket = self.buckets.get(address)
        if bucket is None:
            if len(self.buckets) >= MAX_ADDRESSES:
                self.buckets.clear()
            self.buckets[address] = [self.burst - 1.0, now]
            return True
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1.0
        return True

    def tokens(self, address: str) -> float:
        """What is left of the address's bucket, as of its last request."""
        bucket = self.buckets.get(address)
        return bucket[0] if bucket else self.burst

    def retry_after(self, address: str) -> int:
        bucket = self.buckets.get(address)
        missing = 1.0 - (bucket[0] if bucket else 1.0)
        return max(1, int(missing / self.rate + 0.999))


TOO_MANY = (
    b'{"type":"https://merchant-code.org/problems/too-many-requests","title":"Too many requests",'
    b'"status":429,"detail":"too many scans from this address: wait a moment"}'
)
