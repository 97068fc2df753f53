"""Token buckets per client address shared by every worker process, so that a client gets the
configured rate whatever the number of workers (a bucket per process would give it one each).

`merchant-code serve` makes one table in shared memory before granian starts the workers and
names it to them in `MERCHANT_CODE_LIMITS_SHM` (SLOTS x (key, tokens, stamp)); it unlinks the
table when it stops, and the next serve unlinks the table of one that was killed (its name
carries the pid). Workers map the same file. A slot is found by open addressing from a keyed
hash of the address (keyed by a salt made with the table, so nobody can aim addresses at one
slot); when the probed slots are all taken, the stalest is given to the newcomer.

No lock: two workers updating one bucket at the same instant may both take the same token, a
small over-grant only a client racing itself across workers can get, and rare. Time is
CLOCK_MONOTONIC, the same in every process of the machine.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import time
from collections.abc import Mapping
from multiprocessing import shared_memory
from pathlib import Path

ENV = "MERCHANT_CODE_LIMITS_SHM"
SLOTS = 1 << 16  # 1.5 MB; past this many busy addresses the stalest lose their bucket
PROBES = 8
SALT_BYTES = 16
_SLOT_BYTES = 24  # key (8), tokens (8), stamp (8)
HASHES_KEPT = 100_000
NAME_PREFIX = "merchant_code_limits_"  # and the pid of the serve process that made it
SHM_DIR = "/dev/shm"  # noqa: S108  (where Linux keeps POSIX shared memory, not a temporary file)
SIZE = SALT_BYTES + SLOTS * _SLOT_BYTES


def create() -> shared_memory.SharedMemory:
    """The table, zeroed, with a fresh salt (the serve command's, before the workers start)."""
    sweep()
    name = f"{NAME_PREFIX}{os.getpid()}"
    try:
        shm = shared_memory.SharedMemory(name=name, create=True, size=SIZE)
    except FileExistsError:  # a dead process's of the same pid (sweep spares this pid's)
        shared_memory.SharedMemory(name=name).unlink()
        shm = shared_memory.SharedMemory(name=name, create=True, size=SIZE)
    assert shm.buf is not None
    shm.buf[:SALT_BYTES] = os.urandom(SALT_BYTES)
    return shm


def sweep() -> list[str]:
    """Unlink the tables of serve processes that are gone: one killed together with its process
    group (kill -9 of a whole unit) had no chance to unlink its own. Returns their names."""
    gone = []
    for path in Path(SHM_DIR).glob(NAME_PREFIX + "*"):
        pid = path.name.removeprefix(NAME_PREFIX)
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            path.unlink(missing_ok=True)
            gone.append(path.name)
    return gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def attach(name: str) -> mmap.mmap:
    """A worker's view of the table. Not through SharedMemory: on Python 3.11 attaching registers
    the segment with the worker's resource tracker, which would unlink it when the worker exits."""
    fd = os.open(f"{SHM_DIR}/{name.lstrip('/')}", os.O_RDWR)
    try:
        return mmap.mmap(fd, SIZE)
    finally:
        os.close(fd)


class SharedGate:
    """FloodGate's interface over the shared table. `kind` separates tables' users (scans, the
    public API) that share one segment: it is part of the hashed key."""

    __slots__ = ("_hashed", "_keys", "_mem", "_salt", "_stamps", "_tokens", "burst", "kind", "rate")

    def __init__(self, memory: mmap.mmap | memoryview, kind: bytes, rate: float, burst: int) -> None:
        self._mem = memory
        view = memoryview(memory)
        self._salt = bytes(view[:SALT_BYTES])
        body = view[SALT_BYTES : SALT_BYTES + SLOTS * _SLOT_BYTES]
        self._keys = body[: SLOTS * 8].cast("Q")
        self._tokens = body[SLOTS * 8 : SLOTS * 16].cast("d")
        self._stamps = body[SLOTS * 16 :].cast("d")
        self.kind = kind
        self._hashed: dict[str, int] = {}  # the hash is most of the cost: keep recent ones
        self.rate = rate
        self.burst = float(burst)

    def _key(self, address: str) -> int:
        key = self._hashed.get(address)
        if key is not None:
            return key
        if len(self._hashed) >= HASHES_KEPT:
            self._hashed.clear()
        self._hashed[address] = key = self._hash(address)
        return key

    def _hash(self, address: str) -> int:
        digest = hashlib.blake2b(self.kind + address.encode(), digest_size=8, key=self._salt).digest()
        return int.from_bytes(digest, "little") | 1  # 0 marks a free slot

    def _slot(self, key: int, now: float) -> int:
        keys, stamps = self._keys, self._stamps
        start = key & (SLOTS - 1)
        refill = self.burst / self.rate
        chosen, oldest = start, float("inf")
        for i in range(PROBES):
            slot = (start + i) & (SLOTS - 1)
            found = keys[slot]
            if found == key:
                return slot
            # a free slot, or one whose bucket is full again by now (as good as free), else the stalest
            stamp = -2.0 if found == 0 else stamps[slot] if now - stamps[slot] <= refill else -1.0
            if stamp < oldest:
                chosen, oldest = slot, stamp
        keys[chosen] = key
        self._tokens[chosen] = self.burst
        stamps[chosen] = now
        return chosen

    def allow(self, address: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        slot = self._slot(self._key(address), now)
        tokens = min(self.burst, self._tokens[slot] + (now - self._stamps[slot]) * self.rate)
        self._stamps[slot] = now
        if tokens < 1.0:
            self._tokens[slot] = tokens
            return False
        self._tokens[slot] = tokens - 1.0
        return True

    def tokens(self, address: str) -> float:
        """What is left of the address's bucket, as of its last request."""
        return float(self._tokens[self._slot(self._key(address), time.monotonic())])

    def retry_after(self, address: str) -> int:
        slot = self._slot(self._key(address), time.monotonic())
        missing = 1.0 - self._tokens[slot]
        return max(1, int(missing / self.rate + 0.999))

    def close(self) -> None:
        """Let go of the table (it can then be closed); the gate is unusable afterwards."""
        for view in (self._keys, self._tokens, self._stamps):
            view.release()


def attach_from_env(env: Mapping[str, str]) -> mmap.mmap | None:
    """The table the serve command named to this worker, if any."""
    name = env.get(ENV)
    return attach(name) if name else None
