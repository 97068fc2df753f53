"""Bounded downloads and decompression: a feed over its source's limits (max_bytes, max_ratio)
fails the run with an error naming the limit, and memory stays bounded on the way there; a
rejected record is quarantined with at most a few KB of its raw bytes."""

from __future__ import annotations

import asyncio
import gzip
import io
import os
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest

from merchant_code import db
from merchant_code.feeds import limits, lives, runner
from merchant_code.feeds.base import FeedError, Page
from tests import cli
from tests.bombs import BOMB, HEADER, gzip_bomb, serving, zip_bomb

ROOT = Path(__file__).resolve().parent.parent
LIVES = Path(__file__).parent / "fixtures" / "feeds" / "lives"
CONFIG = lives.Config(url="http://127.0.0.1:9/lives.zip")
MiB = 2**20


async def lives_source(conn: asyncpg.Connection, url: str, **config: Any) -> None:
    await conn.execute(
        "INSERT INTO feed_source (kind, name, url, config) VALUES ('lives', 'bomb', $1, $2)",
        url,
        {"allow_private": True, **config},
    )


async def pull(db_url: str, transport: httpx.AsyncBaseTransport | None = None) -> runner.RunResult:
    pool = await db.create_pool(db_url, max_size=4)
    try:
        return await runner.run_source(pool, "bomb", transport=transport, deadline=60)
    finally:
        await pool.close()


# --- the run, in a process of its own: peak memory measured ------------------------------------

# the child may not pass this (RLIMIT_DATA), so a regression fails the test without taking the
# shared machine's memory with it (the unbounded code took 4.26 GB on the zip bomb)
CHILD_DATA_LIMIT = 1536 * MiB
_CHILD = (
    "import os, resource, sys\n"
    f"resource.setrlimit(resource.RLIMIT_DATA, ({CHILD_DATA_LIMIT}, {CHILD_DATA_LIMIT}))\n"
    "from merchant_code.cli import main\n"
    "try:\n"
    "    main(sys.argv[1:])\n"
    "finally:\n"
    "    status = open('/proc/self/status').read()\n"
    "    hwm = next(l.split()[1] for l in status.splitlines() if l.startswith('VmHWM:'))\n"
    "    open(os.environ['PEAK_RSS_FILE'], 'w').write(hwm)\n"
)


def run_cli_measured(db_url: str, *args: str, timeout: float = 120) -> tuple[int, str, int]:
    """`merchant-code ARGS` in a child process: its exit code, its stdout, its peak RSS in bytes.
    The peak is the child's own VmHWM, read as it exits: wait4's figure would also count the pages
    of this (large) test process that the child held between fork and exec."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MERCHANT_CODE_")}
    env["MERCHANT_CODE_DATABASE_URL"] = db_url
    with tempfile.TemporaryFile() as out, tempfile.NamedTemporaryFile("r") as peak:
        env["PEAK_RSS_FILE"] = peak.name
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, *args], stdout=out, stderr=subprocess.DEVNULL, env=env, cwd=ROOT
        )
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            raise AssertionError(f"merchant-code {' '.join(args)} still running after {timeout} s") from None
        out.seek(0)
        return child.returncode, out.read().decode(), int(peak.read() or 0) * 1024


@pytest.mark.parametrize(
    ("bomb", "headers", "limit"),
    [
        # 952 bytes: inspections.csv, 1 GiB of bzip2 (as the finding's 987-byte zip)
        (lambda: BOMB.read_bytes(), {"content-type": "application/zip"}, "max_bytes"),
        # 1 MB on the wire, 1 GiB once httpx would have undone its Content-Encoding
        (lambda: gzip_bomb(2**30), {"content-type": "text/csv", "content-encoding": "gzip"}, "max_ratio"),
    ],
    ids=["zip-bzip2", "content-encoding-gzip"],
)
async def test_a_1_gib_bomb_served_over_loopback_fails_the_cli_run_naming_the_limit_in_under_300_mb(
    db_url: str, conn: asyncpg.Connection, bomb: Any, headers: dict[str, str], limit: str
) -> None:
    with serving(bomb(), headers) as url:
        await lives_source(conn, url)
        code, out, peak = await asyncio.to_thread(run_cli_measured, db_url, "feeds", "run", "bomb")
    assert code == 1 and "bomb: failed" in out and "TooLarge: " in out and limit in out, out
    assert peak < 300 * MiB, f"peak RSS {peak / MiB:.0f} MB"
    run = await conn.fetchrow("SELECT status, error FROM feed_run")
    assert run is not None and run["status"] == "failed" and limit in run["error"]
    assert await conn.fetchval("SELECT count(*) FROM feed_reject") == 0


# --- HTTP bodies, in process -------------------------------------------------------------------

ENCODINGS = {
    "gzip": zlib.MAX_WBITS | 16,
    "deflate": zlib.MAX_WBITS,  # as HTTP means it: in zlib's wrapper
    "raw-deflate": -zlib.MAX_WBITS,  # as many servers send it
}


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
async def test_a_content_encoding_bomb_fails_the_run_at_max_ratio(
    db_url: str, conn: asyncpg.Connection, encoding: str
) -> None:
    body = gzip_bomb(64 * MiB, ENCODINGS[encoding])
    with serving(body, {"content-encoding": encoding.removeprefix("raw-")}) as url:
        await lives_source(conn, url)
        result = await pull(db_url)
    assert result.status == "failed" and result.error is not None
    assert result.error.startswith("TooLarge: the response from http://127.0.0.1:"), result.error
    assert "max_ratio = 200:1" in result.error


async def test_with_max_ratio_raised_the_bomb_still_stops_at_max_bytes(
    db_url: str, conn: asyncpg.Connection
) -> None:
    with serving(gzip_bomb(64 * MiB), {"content-encoding": "gzip"}) as url:
        await lives_source(conn, url, max_ratio=10_000, max_bytes=8 * MiB)
        result = await pull(db_url)
    assert result.status == "failed" and result.error is not None
    assert "unpacked, is over max_bytes = 8,388,608 bytes" in result.error, result.error


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
async def test_a_real_feed_with_a_content_encoding_is_read_whole(
    db_url: str, conn: asyncpg.Connection, encoding: str
) -> None:
    plain = (LIVES / "multi" / "inspections.csv").read_bytes()
    packer = zlib.compressobj(6, zlib.DEFLATED, ENCODINGS[encoding])
    with serving(
        packer.compress(plain) + packer.flush(), {"content-encoding": encoding.removeprefix("raw-")}
    ) as url:
        await lives_source(conn, url)
        result = await pull(db_url)
    assert result.status == "ok", result.error
    expected = lives.parse(Page(plain), CONFIG)
    assert result.counts.fetched == len(expected.records) + len(expected.rejects) > 0


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "read-to-close"])
async def test_a_plain_body_over_max_bytes_fails_the_run_naming_it(
    db_url: str, conn: asyncpg.Connection, length: bool
) -> None:
    body = HEADER + b"B1,20240101,90\n" * (3 * MiB // 15)
    with serving(body, {"content-type": "text/csv"}, length=length) as url:
        await lives_source(conn, url, max_bytes=MiB)
        result = await pull(db_url)
    assert result.status == "failed" and result.error is not None
    assert "is over max_bytes = 1,048,576 bytes" in result.error, result.error
    assert ("(Content-Length 3,145," in result.error) is length
    assert await conn.fetchval("SELECT count(*) FROM feed_reject") == 0


async def test_an_error_page_too_is_read_within_the_limit(db_url: str, conn: asyncpg.Connection) -> None:
    """A 503 is read (and thrown away) before a retry: a bomb there stops the run the same way."""
    bomb = gzip_bomb(64 * MiB)

    def answer(request: httpx.Request) -> httpx.Response:
        # a stream: given as content=, httpx would unpack it whole in this mock already
        return httpx.Response(503, stream=httpx.ByteStream(bomb), headers={"content-encoding": "gzip"})

    await lives_source(conn, "http://127.0.0.1:9/lives.csv")
    result = await pull(db_url, httpx.MockTransport(answer))
    assert result.status == "failed" and result.error is not None and "max_ratio" in result.error


def test_a_source_s_limits_are_checked_and_name_the_bad_key() -> None:
    assert limits.from_config({"allow_private": True}) == limits.Limits(512 * MiB, 200.0)
    assert limits.from_config({"max_bytes": 2048, "max_ratio": 50}) == limits.Limits(2048, 50.0)
    for bad, key in (({"max_bytes": 0}, "max_bytes"), ({"max_ratio": "lots"}, "max_ratio")):
        with pytest.raises(msgspec.ValidationError, match=key):
            limits.from_config(bad)
    assert {"max_bytes", "max_ratio"} <= set(runner.RUNNER_KEYS)


async def test_feeds_add_takes_limits_and_refuses_a_bad_one_naming_it(
    db_url: str, conn: asyncpg.Connection
) -> None:
    def add(config: str) -> subprocess.CompletedProcess[str]:
        return cli.run(
            db_url, "feeds", "add", "city", "--kind", "lives", "--url", "http://127.0.0.1:9/l.zip",
            "--allow-private", "--config", config,
        )  # fmt: skip

    refused = await asyncio.to_thread(add, '{"max_bytes": 0}')
    assert refused.returncode == 1 and "max_bytes" in refused.stderr and "Traceback" not in refused.stderr
    added = await asyncio.to_thread(add, '{"max_bytes": 1048576, "max_ratio": 50}')
    assert added.returncode == 0, added.stderr
    config = await conn.fetchval("SELECT config FROM feed_source WHERE name = 'city'")
    assert config == {"max_bytes": 1048576, "max_ratio": 50, "allow_private": True}


# --- zip members -------------------------------------------------------------------------------


def declaring(archive: bytes, size: int) -> bytes:
    """The archive with its (one) member's unpacked size rewritten in both headers: a lie."""
    data = bytearray(archive)
    struct.pack_into("<I", data, 22, size)  # local file header
    struct.pack_into("<I", data, data.find(b"PK\x01\x02") + 24, size)  # central directory
    return bytes(data)


@pytest.mark.parametrize("compression", [zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_a_member_that_unpacks_past_the_size_it_declares_stops_there(compression: int) -> None:
    """A header that lies about the size (so neither max_bytes nor max_ratio refuses it up front)
    costs one step of unpacking, not the gigabyte behind it."""
    archive = declaring(zip_bomb(16 * MiB, compression), 1000)
    with pytest.raises(FeedError, match="unpacks past the 1,000 bytes it declares"):
        lives.parse(Page(archive), CONFIG)


def test_a_member_declaring_a_ratio_over_max_ratio_is_refused_before_it_is_unpacked() -> None:
    archive = bytearray(zip_bomb(64 * MiB, zipfile.ZIP_DEFLATED))
    start = 30 + len("inspections.csv")
    archive[start : start + 64] = bytes(64)  # damaged: unpacking it would fail otherwise
    with pytest.raises(limits.TooLarge, match=r"inspections\.csv in the zip declares .* over max_ratio"):
        lives.parse(Page(bytes(archive)), CONFIG)


def test_a_member_declaring_more_than_max_bytes_is_refused() -> None:
    with pytest.raises(
        limits.TooLarge, match=r"1,073,741,824 bytes unpacked, it declares\) is over max_bytes"
    ):
        lives.parse(Page(BOMB.read_bytes()), CONFIG)
    with zipfile.ZipFile(BOMB) as archive:  # the fixture is what it says
        (info,) = archive.infolist()
    assert (info.filename, info.file_size, info.compress_type) == (
        "inspections.csv",
        2**30,
        zipfile.ZIP_BZIP2,
    )
    assert BOMB.stat().st_size < 1000


def test_the_members_together_may_not_pass_max_bytes() -> None:
    rows = b"".join(b"B%d,2024%04d,%d\n" % (n, 101 + n % 28, n % 100) for n in range(40_000))
    members = {"businesses.csv": b"business_id,name\n" + rows[:600_000], "inspections.csv": HEADER + rows}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with (
        limits.applied(limits.Limits(max_bytes=len(rows) + 100_000)),
        pytest.raises(limits.TooLarge, match="the zip's members together is over max_bytes"),
    ):
        lives.parse(Page(buffer.getvalue()), CONFIG)
    with limits.applied(limits.Limits(max_bytes=len(rows) + 700_000)):
        assert lives.parse(Page(buffer.getvalue()), CONFIG).records


@pytest.mark.parametrize(
    "compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA]
)
def test_a_real_zip_reads_the_same_whatever_its_compression(compression: int) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for path in sorted((LIVES / "multi").iterdir()):
            archive.writestr("putuo/" + path.name, path.read_bytes())
        # a member larger than one step, so unpacking takes several
        archive.writestr("other/big.csv", HEADER + b"B1,20240101,90\n" * 50_000)
    parsed = lives.parse(Page(buffer.getvalue()), CONFIG)
    plain = {path.name: path.read_bytes() for path in (LIVES / "multi").iterdir()}
    assert parsed == lives._parse_multi(plain, CONFIG)
    assert lives._unzip(buffer.getvalue())["big.csv"] == HEADER + b"B1,20240101,90\n" * 50_000


def test_a_damaged_member_is_a_feed_error_naming_its_crc() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("inspections.csv", HEADER + b"B1,20240101,90\n")
    damaged = buffer.getvalue().replace(b"B1,2024", b"B2,2024", 1)
    with pytest.raises(FeedError, match="CRC-32"):
        lives.parse(Page(damaged), CONFIG)


# --- quarantine --------------------------------------------------------------------------------


async def test_a_reject_keeps_4_kb_of_its_raw_record_with_a_marker_and_its_whole_reason(
    db_url: str, conn: asyncpg.Connection
) -> None:
    line = b"B1," + b"9" * 100_000 + b",90"  # a field under the csv module's limit
    body = HEADER + line + b"\n" + b"B2,19000101,80\n"

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=gzip.compress(body), headers={"content-encoding": "gzip"})

    await lives_source(conn, "http://127.0.0.1:9/lives.csv")
    result = await pull(db_url, httpx.MockTransport(answer))
    assert result.status == "ok" and result.counts.quarantined == 2, result.error
    rows = await conn.fetch("SELECT external_id, raw_bytes, reason FROM feed_reject ORDER BY id")
    big, small = (bytes(r["raw_bytes"]) for r in rows)
    assert big == line[:4096] + b"\n[... cut: the first 4,096 of 100,006 bytes kept]"
    assert rows[0]["reason"] == "inspections.csv: invalid date '" + "9" * 40 + "...'"
    assert rows[0]["external_id"] == "B1"
    assert small == b"B2,19000101,80"  # a record under the cap is kept exactly
