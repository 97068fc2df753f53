"""A client gets the configured scan rate whatever the number of worker processes: the buckets
live in one table in shared memory, made by `serve` and gone when it stops."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from multiprocessing import shared_memory
from pathlib import Path

import asyncpg
import httpx
import pytest

from merchant_code import shared_buckets
from merchant_code.shared_buckets import SharedGate
from tests import factories
from tests.service import running

SHM = Path("/dev/shm")
BURST = 150
SENT = 2 * BURST


@pytest.fixture
def table() -> Iterator[shared_memory.SharedMemory]:
    shm = shared_buckets.create()
    yield shm
    shm.close()
    shm.unlink()


def test_two_workers_on_one_table_share_one_budget(table: shared_memory.SharedMemory) -> None:
    first = SharedGate(table.buf, b"scan", rate=2.0, burst=4)
    second = SharedGate(table.buf, b"scan", rate=2.0, burst=4)
    try:
        answers = [gate.allow("203.0.113.9", now=100.0) for gate in (first, second) * 3]
        assert answers == [True, True, True, True, False, False]
        assert second.retry_after("203.0.113.9") == 1
        assert first.allow("198.51.100.1", now=100.0)  # another address has its own bucket
        assert second.allow("203.0.113.9", now=100.5)  # half a second at 2 a second: one more
        assert not first.allow("203.0.113.9", now=100.5)
        # never more than the burst, however long the client was quiet
        assert [first.allow("203.0.113.9", now=500.0) for _ in range(5)] == [True] * 4 + [False]
        # another use of the table (kind) does not spend the scans' budget
        other = SharedGate(table.buf, b"public", rate=2.0, burst=4)
        assert other.allow("203.0.113.9", now=500.0)
        other.close()
    finally:
        first.close()
        second.close()


def _tables() -> set[Path]:
    """The tables of per-client buckets in shared memory now (other tests' may come and go)."""
    found = set()
    for path in SHM.glob(shared_buckets.NAME_PREFIX + "*"):
        try:
            if path.stat().st_size == shared_buckets.SIZE:
                found.add(path)
        except FileNotFoundError:
            pass
    return found


def test_many_addresses_crowding_one_table_do_not_refuse_a_newcomer(
    table: shared_memory.SharedMemory,
) -> None:
    gate = SharedGate(table.buf, b"scan", rate=1.0, burst=2)
    try:
        for n in range(3 * shared_buckets.SLOTS):  # more addresses than the table has slots
            gate.allow(f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", now=1.0)
        assert gate.allow("203.0.113.77", now=1.0)
        assert gate.allow("203.0.113.77", now=1.0)
        assert not gate.allow("203.0.113.77", now=1.0)
    finally:
        gate.close()


def test_a_table_left_by_a_killed_serve_is_swept_at_the_next_start() -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    left = SHM / f"{shared_buckets.NAME_PREFIX}{int(dead.stdout)}"
    left.write_bytes(b"\0" * 64)
    shm = shared_buckets.create()
    try:
        assert not left.exists()
        assert shm.name.endswith(str(os.getpid()))
    finally:
        shm.close()
        shm.unlink()
    assert not (SHM / shm.name.lstrip("/")).exists()


async def _flood(base: str, path: str) -> tuple[int, set[str]]:
    """SENT scans from one client address (named by X-Forwarded-For), eight at a time, each on a
    new connection so that the workers share them: how many were answered 200, and the
    processes that answered (the request id's per-process prefix)."""
    ok = 0
    workers: set[str] = set()
    limits = httpx.Limits(max_keepalive_connections=0)
    headers = {"x-forwarded-for": "203.0.113.9"}
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        queue = iter(range(SENT))

        async def sender() -> None:
            nonlocal ok
            for _ in queue:
                answer = await client.get(path, headers=headers)
                assert answer.status_code in (200, 429), answer.text
                ok += answer.status_code == 200
                workers.add(answer.headers["x-request-id"][:12])

        await asyncio.gather(*(sender() for _ in range(8)))
    return ok, workers


async def test_a_client_gets_the_same_scans_from_one_worker_as_from_four(
    db_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    _, code = await factories.shop(conn)
    answered = {}
    for workers in (1, 4):
        before = await asyncio.to_thread(_tables)
        async with running(
            db_url,
            workers=str(workers),
            data_dir=str(tmp_path),  # the second service needs the first one's sticker key
            trusted_proxies="127.0.0.1",
            # a refill slow enough that a busy machine's slowness adds little to the burst
            scan_rate="0.2",
            scan_burst=str(BURST),
        ) as base:
            made = await asyncio.to_thread(_tables) - before
            assert made, "serve made no table in shared memory"
            answered[workers], answering = await _flood(base, f"/s/{code}")
            if workers == 4:
                assert len(answering) > 1, "one worker answered everything: the test proves nothing"
        # gone once the service stopped
        assert not made & await asyncio.to_thread(_tables)
    # the burst, give or take what the bucket refilled while the flood ran, with any workers
    for ok in answered.values():
        assert BURST <= ok <= BURST * 1.1, answered
    assert abs(answered[4] - answered[1]) < 0.1 * answered[1], answered
