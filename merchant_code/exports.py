"""Open data: an area's public records (the area and every area below it) as files anyone may
download, written by a job.

Two formats. `lives`: a zip of the LIVES files (businesses.csv, inspections.csv, violations.csv,
feed_info.csv; UTF-8, dates YYYYMMDD), keyed by the shop's USCC so that any LIVES consumer, our own
feed included, finds the shop again. `jsonl`: a gzipped JSON Lines dump, one line per shop: its
public fields and the citizen's document of its profile. Nothing private is read: no owner or
staff data, and no inspection summary (the citizen's view leaves it out too).

A request only enqueues (a fresh ready export or the one already waiting is reused; a unique
index keeps one waiting or running per area and format); `run_pending` claims rows with SKIP
LOCKED and streams the rows through server-side cursors inside one read-only snapshot, batch by
batch, so an area of a million shops never sits in memory. Files go to DATA_DIR/exports/<id>.<ext>
under a temporary name and are renamed once complete, and only by the worker still holding the
claim (a run silent for STALE_SECONDS is taken over). Once a newer export of the same area and
format has been ready for KEEP_SECONDS, the older one's file is deleted and its row says
`expired` (a download answers 410); files no ready export names (left by a crash) go too.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import gzip
import hashlib
import io
import logging
import os
import secrets
import uuid
import zipfile
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any, Literal
from zoneinfo import ZoneInfo

import asyncpg
import msgspec

from merchant_code import csvsafe, db, load
from merchant_code.errors import InvalidInput

log = logging.getLogger("merchant_code.exports")

Format = Literal["lives", "jsonl"]
Status = Literal["pending", "running", "ready", "failed", "expired"]
FRESH_SECONDS = 24 * 3600  # a ready export younger than this is handed out instead of a new one
STALE_SECONDS = 3600  # a run silent this long is taken to have died
KEEP_SECONDS = 7 * 24 * 3600  # an export replaced by a newer one is deleted this long after
BATCH = 5000  # rows per cursor fetch
RETRY_AFTER = 10  # seconds: the job runs every 10 s
EXTENSIONS: dict[str, str] = {"lives": "zip", "jsonl": "jsonl.gz"}
MEDIA_TYPES: dict[str, str] = {"lives": "application/zip", "jsonl": "application/gzip"}

BUSINESSES = ("business_id", "name", "address", "city", "state", "postal_code", "latitude", "longitude",
              "phone_number")  # fmt: skip
INSPECTIONS = ("business_id", "date", "score", "result", "description", "type")
VIOLATIONS = ("business_id", "date", "description", "code", "critical")
FEED_INFO = ("feed_date", "feed_version", "municipality_name", "municipality_url", "contact_email")
# LIVES wording that LIVES readers (merchant_code.feeds.lives among them) map back to ours
RESULTS = {"pass": "Pass", "rectify": "Conditional Pass", "fail": "Fail"}
KINDS = {
    "routine": "Routine",
    "follow_up": "Follow-up",
    "complaint": "Complaint",
    "special": "Special",
    "licensing": "Licensing",
}


class Export(msgspec.Struct, frozen=True):
    id: uuid.UUID
    area_code: str
    format: Format
    status: Status
    path: str | None
    size: int | None
    sha256: str | None
    rows: dict[str, int] | None
    requested_at: datetime.datetime
    started_at: datetime.datetime | None
    finished_at: datetime.datetime | None
    error: str | None

    @property
    def filename(self) -> str:
        """What a download is saved as: `lives-310199-20260301.zip`, `shops-310199-20260301.jsonl.gz`."""
        stem = "lives" if self.format == "lives" else "shops"
        day = (self.finished_at or self.requested_at).strftime("%Y%m%d")
        return f"{stem}-{self.area_code}-{day}.{EXTENSIONS[self.format]}"


class _Claim(msgspec.Struct, frozen=True):
    id: uuid.UUID
    format: Format
    started_at: datetime.datetime
    area_code: str
    area_path: str
    area_name: str
    district_name: str


async def get_export(conn: asyncpg.Connection, export_id: uuid.UUID) -> Export | None:
    return db.one(await db.queries.get_export_file(conn, id=export_id), Export)


async def request_export(conn: asyncpg.Connection, area_code: str, fmt: Format) -> Export:
    """The export a request for this area and format gets: the newest ready one if fresh, else
    the one waiting or running, else a new one waiting for the job."""
    area = await db.queries.get_export_area(conn, code=area_code)
    if area is None:
        raise InvalidInput("area_code", f"no area has the code {area_code}")
    # a concurrent request's export may be finished between the two statements: ask again
    for _ in range(5):
        found = await db.queries.get_current_export_id(
            conn, area_id=area["id"], format=fmt, fresh_seconds=FRESH_SECONDS
        )
        if found is None:
            found = await db.queries.create_export_file(conn, area_id=area["id"], format=fmt)
        if found is not None:
            export = await get_export(conn, found)
            assert export is not None
            return export
    raise RuntimeError("no export could be found or created")  # pragma: no cover


# --- the job -------------------------------------------------------------------------------------


async def run_job(state: Any) -> None:
    """Scheduled: write every export that waits, then delete the files of replaced ones."""
    settings = state.settings
    async with db.acquire(state.pool) as conn:
        await run_pending(
            conn, Path(settings.data_dir), base_url=settings.base_url, timezone=settings.timezone
        )
        await expire(conn, Path(settings.data_dir))


async def expire(conn: asyncpg.Connection, data_dir: Path, keep_seconds: float = KEEP_SECONDS) -> int:
    """Mark the exports replaced more than `keep_seconds` ago expired and delete their files
    (after the commit: a crash in between leaves a file, never a ready row without one); then
    delete files in DATA_DIR/exports that no ready export names and nobody has written for
    STALE_SECONDS (a writer's file is renamed into place just before its row says ready).
    Returns how many files were deleted."""
    async with conn.transaction():
        gone = [row["path"] async for row in db.queries.expire_export_files(conn, keep_seconds=keep_seconds)]
    ready = {row["path"] async for row in db.queries.list_ready_export_paths(conn)}
    return await asyncio.to_thread(_delete, data_dir, gone, ready)


def _delete(data_dir: Path, gone: list[str], ready: set[str]) -> int:
    deleted = 0
    for relative in gone:
        with contextlib.suppress(FileNotFoundError):
            (data_dir / relative).unlink()
            deleted += 1
    folder = data_dir / "exports"
    if not folder.is_dir():
        return deleted
    old = datetime.datetime.now().timestamp() - STALE_SECONDS
    for path in folder.iterdir():
        name = f"exports/{path.name}"
        if path.name.startswith(".") or name in ready or not path.is_file():
            continue  # a run's temporary file (removed by its own run), or a ready export
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_mtime < old:
                path.unlink()
                deleted += 1
                log.info("deleted %s, which no ready export names", name)
    return deleted


async def run_pending(
    conn: asyncpg.Connection,
    data_dir: Path,
    *,
    base_url: str = "",
    timezone: str = "Asia/Shanghai",
    limit: int = 20,
) -> int:
    """Claim waiting exports one by one (SKIP LOCKED: other instances take others) and write
    them; returns how many were claimed."""
    claimed = 0
    while claimed < limit:
        row = await db.queries.claim_export_file(conn, stale_seconds=STALE_SECONDS)
        if row is None:
            break
        claimed += 1
        job = msgspec.convert(dict(row), _Claim)
        await _run_one(conn, job, data_dir, base_url, ZoneInfo(timezone))
    return claimed


async def _run_one(
    conn: asyncpg.Connection, job: _Claim, data_dir: Path, base_url: str, zone: ZoneInfo
) -> None:
    folder = data_dir / "exports"
    name = f"{job.id}.{EXTENSIONS[job.format]}"
    temp = folder / f".{name}.{secrets.token_hex(4)}.part"
    try:
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            if job.format == "lives":
                rows = await _write_lives(conn, job, temp, base_url, zone)
            else:
                rows = await _write_jsonl(conn, job, temp)
        size, digest = await asyncio.to_thread(_seal, temp)
        async with conn.transaction():
            if not await db.queries.lock_claimed_export(conn, id=job.id, started_at=job.started_at):
                log.warning("export %s was taken over by another worker; its file is dropped", job.id)
                return
            await asyncio.to_thread(os.replace, temp, folder / name)
            await db.queries.finish_export_file(
                conn, id=job.id, path=f"exports/{name}", size=size, sha256=digest, rows=rows
            )
        log.info("export %s (%s of %s) ready: %d bytes, %s", job.id, job.format, job.area_code, size, rows)
    except Exception as exc:  # the export fails and says why; a new request starts another
        log.exception("export %s (%s of %s) failed", job.id, job.format, job.area_code)
        error = f"{type(exc).__name__}: {exc}"[:500]
        await db.queries.fail_export_file(conn, id=job.id, started_at=job.started_at, error=error)
    finally:
        await asyncio.to_thread(_discard, temp)


def _discard(path: Path) -> None:
    with contextlib.suppress(OSError):  # nothing there, or no folder to hold it
        path.unlink()


def _seal(path: Path) -> tuple[int, str]:
    """Flush the file to disk; its size and SHA-256."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
        os.fsync(f.fileno())
    return path.stat().st_size, digest.hexdigest()


async def _batches(
    conn: asyncpg.Connection, query: Any, area_path: str
) -> AsyncIterator[list[asyncpg.Record]]:
    """The query's rows in batches, through a server-side cursor (inside the caller's transaction)."""
    cursor = await conn.cursor(query.sql, area_path)
    while batch := await cursor.fetch(BATCH):
        yield batch
        await load.pause_if_busy()


# --- LIVES ---------------------------------------------------------------------------------------


class _Zip:
    """A zip written member by member, each a CSV streamed through in batches."""

    def __init__(self, path: Path, when: datetime.datetime) -> None:
        self.archive = zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED)
        self.when = when.timetuple()[:6]
        self.text: IO[str] | None = None
        self.writer: Any = None

    def begin(self, name: str, header: Sequence[str]) -> None:
        # zip64 headers whatever the size: a member's final size is not known when it starts
        info = zipfile.ZipInfo(name, date_time=self.when)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16  # a plain file, readable by all, once unpacked
        member = self.archive.open(info, "w", force_zip64=True)
        self.text = io.TextIOWrapper(member, encoding="utf-8", newline="")
        self.writer = csvsafe.writer(self.text)
        self.writer.writerow(header)

    def write(self, rows: Iterable[Sequence[Any]]) -> None:
        self.writer.writerows(rows)

    def end(self) -> None:
        if self.text is not None:
            self.text.close()
            self.text = None

    def close(self) -> None:
        self.end()
        self.archive.close()


def _business(r: asyncpg.Record, city: str) -> tuple[Any, ...]:
    return (r["uscc"], r["name"], r["address"], city, "", "", r["lat"], r["lon"], r["phone"])


def _inspection(r: asyncpg.Record) -> tuple[Any, ...]:
    # LIVES scores are 0-100: a score on another scale (FHRS points) is left out, and an unknown
    # result stays empty rather than becoming one
    score = r["score"] if r["score_scale"] in (None, "lives_0_100") else None
    return (r["uscc"], r["day"], score, RESULTS.get(r["result"], ""), "", KINDS[r["kind"]])


def _violation(r: asyncpg.Record) -> tuple[Any, ...]:
    return (r["uscc"], r["day"], r["description"], r["code"], {True: "Y", False: "N"}.get(r["critical"], ""))


async def _write_lives(
    conn: asyncpg.Connection, job: _Claim, path: Path, base_url: str, zone: ZoneInfo
) -> dict[str, int]:
    started = job.started_at.astimezone(zone)  # the feed's date, version and member times
    out = await asyncio.to_thread(_Zip, path, started)
    counts: dict[str, int] = {}
    business = functools.partial(_business, city=job.district_name)
    members: list[tuple[str, Sequence[str], Any, Callable[[asyncpg.Record], tuple[Any, ...]]]] = [
        ("businesses.csv", BUSINESSES, db.queries.list_export_businesses, business),
        ("inspections.csv", INSPECTIONS, db.queries.list_export_inspections, _inspection),
        ("violations.csv", VIOLATIONS, db.queries.list_export_violations, _violation),
    ]
    try:
        for name, header, query, shape in members:
            await asyncio.to_thread(out.begin, name, header)
            counts[name] = 0
            async for batch in _batches(conn, query, job.area_path):
                await asyncio.to_thread(out.write, [shape(r) for r in batch])
                counts[name] += len(batch)
            await asyncio.to_thread(out.end)
        where = (
            job.district_name
            if job.area_name == job.district_name
            else f"{job.district_name} {job.area_name}"
        )
        info = (started.strftime("%Y%m%d"), started.strftime("%Y%m%d%H%M%S"), where, base_url, "")
        await asyncio.to_thread(out.begin, "feed_info.csv", FEED_INFO)
        await asyncio.to_thread(out.write, [info])
        counts["feed_info.csv"] = 1
    finally:
        await asyncio.to_thread(out.close)
    return counts


# --- JSON Lines ----------------------------------------------------------------------------------


class _Gzip:
    """A gzip file with no name and no time in its header: the same rows give the same bytes."""

    def __init__(self, path: Path) -> None:
        self.raw = path.open("wb")
        self.out = gzip.GzipFile(filename="", mode="wb", fileobj=self.raw, mtime=0)

    def write(self, data: bytes) -> None:
        self.out.write(data)

    def close(self) -> None:
        self.out.close()
        self.raw.close()


async def _write_jsonl(conn: asyncpg.Connection, job: _Claim, path: Path) -> dict[str, int]:
    out = await asyncio.to_thread(_Gzip, path)
    shops = 0
    try:
        async for batch in _batches(conn, db.queries.list_export_documents, job.area_path):
            data = "".join(r["line"] + "\n" for r in batch).encode()
            await asyncio.to_thread(out.write, data)
            shops += len(batch)
    finally:
        await asyncio.to_thread(out.close)
    return {"shops": shops}
