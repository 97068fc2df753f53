"""The one runner for every source: it fetches pages through the source's module, and for each
page, in one transaction, matches records to shops, upserts them keyed on (source, external_id)
(never moving a record backwards in time), quarantines what cannot be used with its raw bytes,
stores the cursor and adds to the run's counts (fetched = inserted + updated + unchanged +
quarantined). Touched shops' profiles are marked for rebuild by the tables' triggers.

Two instances never run one source at once: a run first takes a lease in the source's row (one
connection does the whole run) and is skipped when another holds it.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import asyncpg
import httpx
import msgspec
import stamina

from merchant_code import db
from merchant_code.codes import parse_uscc
from merchant_code.errors import InvalidInput, NotFound
from merchant_code.feeds import http as feed_http
from merchant_code.feeds import limits as feed_limits
from merchant_code.feeds import quality
from merchant_code.feeds.base import (
    InspectionRecord,
    LicenceRecord,
    Parsed,
    Reject,
    ReviewRecord,
    SentimentRecord,
    ShopRecord,
)

MODULES = {
    "lives": "merchant_code.feeds.lives",
    "fhrs": "merchant_code.feeds.fhrs",
    "licence_registry": "merchant_code.feeds.licences",
    "review_platform": "merchant_code.feeds.reviews",
    "rss": "merchant_code.feeds.rss",
}
LEASE_MARGIN = 60.0  # seconds a run's lease on its source outlasts the run's deadline
PAUSE_AFTER = 5  # failed runs in a row before the breaker pauses a source
PAUSE_SECONDS = 900
DEADLINE = 300.0  # seconds a run may take, all pages and retries included


@dataclass
class Counts:
    fetched: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    quarantined: int = 0

    def add(self, other: Counts) -> None:
        for name in ("fetched", "inserted", "updated", "unchanged", "quarantined"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class RunResult:
    source: str
    status: str  # ok, failed, skipped (another instance runs it), paused
    counts: Counts = field(default_factory=Counts)
    pages: int = 0
    seconds: float = 0.0
    error: str | None = None
    run_id: int | None = None


def module_for(kind: str) -> ModuleType:
    return importlib.import_module(MODULES[kind])


# keys of `feed_source.config` that are the runner's, not the source module's (max_bytes and
# max_ratio: how much one page may unpack to, see limits.py)
RUNNER_KEYS = ("allow_private", "deadline", "quality", *feed_limits.KEYS)


async def run_source(
    pool: asyncpg.Pool,
    name: str,
    *,
    client: httpx.AsyncClient | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    deadline: float | None = None,
    module: ModuleType | None = None,
    progress: Callable[[RunResult], None] | None = None,
) -> RunResult:
    """Pull one source now: every page after its cursor, each in its own transaction. Without a
    client, one is made for the run through the SSRF-checking, retrying transport (over
    `transport`, for tests, or the network)."""
    if client is None:
        async with db.acquire(pool) as conn:
            row = await db.queries.get_feed_source(conn, name=name)
        allow = bool(row and (row["config"] or {}).get("allow_private"))
        async with feed_http.client(allow, inner=transport) as made:
            return await run_source(
                pool, name, client=made, deadline=deadline, module=module, progress=progress
            )
    started = time.perf_counter()
    # one connection for the whole run: a run that waited for a second one while holding its first
    # could, with enough sources due at once, hold every connection of the pool
    async with db.acquire(pool) as conn:
        source = await db.queries.get_feed_source(conn, name=name)
        if source is None:
            raise NotFound(f"no feed source is named {name!r}")
        mod = module or module_for(source["kind"])
        options = dict(source["config"] or {})
        runner_options = {k: options.pop(k) for k in RUNNER_KEYS if k in options}
        config = msgspec.convert({"url": source["url"], **options}, mod.Config)
        deadline = deadline or float(runner_options.get("deadline", DEADLINE))
        limits = feed_limits.from_config(runner_options)
        # the lease outlasts the deadline, so it is never lost while this run still writes
        if await db.queries.lease_feed_source(conn, id=source["id"], seconds=deadline + LEASE_MARGIN) is None:
            return RunResult(name, "skipped", error="another instance is running this source")
        run_id: int = await db.queries.create_feed_run(conn, source_id=source["id"])
        result = RunResult(name, "ok", run_id=run_id)
        try:
            with feed_limits.applied(limits):
                await _pages(conn, client, mod, config, source, result, deadline, progress)
            await db.queries.finish_feed_run(conn, id=run_id, status="ok", error=None)
            await db.queries.feed_source_succeeded(conn, id=source["id"])
            await db.queries.release_feed_source(conn, id=source["id"])
        except Exception as exc:  # the run fails and says why; the source's breaker counts it
            result.status = "failed"
            result.error = f"{type(exc).__name__}: {exc}"[:500] if str(exc) else type(exc).__name__
    if result.status == "failed":
        # on a fresh connection, taken once the run's own is back: that one may be what broke
        async with db.acquire(pool) as fresh:
            await db.queries.finish_feed_run(fresh, id=run_id, status="failed", error=result.error)
            await db.queries.feed_source_failed(
                fresh, id=source["id"], pause_after=PAUSE_AFTER, pause_seconds=PAUSE_SECONDS
            )
            await db.queries.release_feed_source(fresh, id=source["id"])
    result.seconds = time.perf_counter() - started
    return result


async def _pages(
    conn: asyncpg.Connection,
    client: httpx.AsyncClient,
    mod: ModuleType,
    config: Any,
    source: asyncpg.Record,
    result: RunResult,
    deadline: float,
    progress: Callable[[RunResult], None] | None,
) -> None:
    """Every page after the source's cursor, each stored in its own transaction."""
    cursor = _cursor(source["cursor"])
    shape: quality.Shape = {}  # what the pages look like, for the quality report's schema drift
    async with asyncio.timeout(deadline):
        while True:
            page = await mod.fetch(client, config, cursor)
            # parse is pure and may take seconds on a large feed (a million-row LIVES zip: about
            # half a minute): in a thread, so this worker's requests and other jobs go on being
            # served meanwhile. At the deadline the run stops waiting and fails; the thread
            # finishes its parse and it is thrown away
            parsed: Parsed = await asyncio.to_thread(mod.parse, page, config)
            shape = await quality.record_shape(conn, result.run_id, shape, page.body)
            # two sources' pages that touch the same shops in another order can deadlock on the
            # profiles' rebuild queue; PostgreSQL undoes one of them, which is then stored again
            async for attempt in stamina.retry_context(on=asyncpg.DeadlockDetectedError, attempts=3):
                with attempt:
                    async with conn.transaction():
                        counts = await store(conn, source["id"], source["name"], result.run_id or 0, parsed)
                        await db.queries.set_feed_cursor(conn, id=source["id"], cursor=page.next_cursor)
                        await db.queries.add_to_feed_run(conn, id=result.run_id, **counts.__dict__)
            result.counts.add(counts)
            result.pages += 1
            if progress is not None:
                progress(result)
            cursor = page.next_cursor
            if page.last:
                return


def _cursor(stored: Any) -> str | None:
    return None if stored is None else str(stored)


def _raw(record: Any) -> bytes:
    return msgspec.json.encode(record)


async def store(conn: asyncpg.Connection, source_id: int, source: str, run_id: int, parsed: Parsed) -> Counts:
    """One page's records into the database, set-based per kind of record."""
    counts = Counts(fetched=len(parsed.records) + len(parsed.rejects))
    rejects: list[Reject] = list(parsed.rejects)
    records = list(parsed.records)
    shops = await _resolve(conn, source_id, records)

    mapping = [(r, s, w) for r, (s, w) in zip(records, shops, strict=True) if isinstance(r, ShopRecord)]
    known = [(r, s, w) for r, s, w in mapping if s is not None]
    for r, s, _ in mapping:
        if s is None:
            rejects.append(Reject(_raw(r), "no shop in the register matches this business", r.external_id))
    if known:
        # one row per business id (the last the page gives), so one statement touches each once
        learned = {r.match.business_id or r.external_id: (s, w) for r, s, w in known}
        rows = [
            row["inserted"]
            async for row in db.queries.upsert_shop_map(
                conn,
                source_id=source_id,
                business_ids=list(learned),
                shop_ids=[s for s, _ in learned.values()],
                matched_bys=[w for _, w in learned.values()],
            )
        ]
        _count(counts, rows, len(known))
        # records later on this page may name the businesses just learned: the mapping comes
        # first in resolve_shops, so for them it now gives these shops (the rest is unchanged)
        shops = [
            (learned[r.match.business_id][0], "business_id") if r.match.business_id in learned else found
            for r, found in zip(records, shops, strict=True)
        ]

    grouped: dict[type, list[tuple[Any, int | None]]] = {}
    for record, (shop_id, _) in zip(records, shops, strict=True):
        if isinstance(record, ShopRecord):
            continue
        if shop_id is None and not isinstance(record, SentimentRecord):
            rejects.append(
                Reject(_raw(record), "no shop in the register matches this record", record.external_id)
            )
            continue
        grouped.setdefault(type(record), []).append((record, shop_id))

    for kind, items in grouped.items():
        items = _last_of_each(items)
        counts.unchanged += len(grouped[kind]) - len(items)  # the same record twice on one page
        changed = await _upsert(conn, source, kind, items)
        _count(counts, changed, len(items))

    if rejects:
        await db.queries.create_feed_rejects(
            conn,
            run_id=run_id,
            source_id=source_id,
            external_ids=[r.external_id and r.external_id[:500] for r in rejects],
            raws=[feed_limits.clip(r.raw) for r in rejects],
            reasons=[r.reason[:500] for r in rejects],
        )
    counts.quarantined = len(rejects)
    return counts


def _count(counts: Counts, inserted_flags: list[bool], total: int) -> None:
    inserted = sum(1 for f in inserted_flags if f)
    counts.inserted += inserted
    counts.updated += len(inserted_flags) - inserted
    counts.unchanged += total - len(inserted_flags)


def _last_of_each(items: list[tuple[Any, int | None]]) -> list[tuple[Any, int | None]]:
    """One row per external id (the last one the page gives), so one statement touches each once."""
    latest: dict[str, tuple[Any, int | None]] = {}
    for item in items:
        latest[item[0].external_id] = item
    return list(latest.values())


async def _resolve(
    conn: asyncpg.Connection, source_id: int, records: list[Any]
) -> list[tuple[int | None, str | None]]:
    if not records:
        return []
    rows = db.queries.resolve_shops(
        conn,
        source_id=source_id,
        business_ids=[r.match.business_id for r in records],
        # a source that keys businesses by their USCC (as the demo's provider does) is matched by it
        usccs=[r.match.uscc or _as_uscc(r.match.business_id) for r in records],
        licence_numbers=[r.match.licence_number for r in records],
        names=[r.match.name for r in records],
        addresses=[r.match.address for r in records],
    )
    return [(row["shop_id"], row["matched_by"]) async for row in rows]


def _as_uscc(value: str | None) -> str | None:
    if value is None or len(value.strip()) != 18:
        return None
    try:
        return parse_uscc(value)
    except InvalidInput:
        return None


async def _upsert(
    conn: asyncpg.Connection, source: str, kind: type, items: list[tuple[Any, int | None]]
) -> list[bool]:
    rs = [r for r, _ in items]
    shop_ids = [s for _, s in items]
    if kind is InspectionRecord:
        rows = [
            dict(row)
            async for row in db.queries.upsert_inspections(
                conn,
                source=source,
                external_ids=[r.external_id for r in rs],
                shop_ids=shop_ids,
                dates=[r.inspected_on for r in rs],
                kinds=[r.kind for r in rs],
                scores=[r.score for r in rs],
                results=[r.result for r in rs],
                grades=[r.grade for r in rs],
                summaries=[r.description for r in rs],
                updated_ats=[r.updated_at for r in rs],
            )
        ]
        by_id = {r.external_id: r for r in rs}
        ids: list[int] = []
        codes: list[str | None] = []
        descriptions: list[str | None] = []
        criticals: list[bool | None] = []
        for row in rows:
            record = by_id[row["external_id"]]
            if not record.violations:
                ids.append(row["id"])
                codes.append(None)
                descriptions.append(None)
                criticals.append(None)
            for v in record.violations:
                ids.append(row["id"])
                codes.append(v.code)
                descriptions.append(v.description)
                criticals.append(v.critical)
        if ids:
            await db.queries.replace_violations(
                conn, inspection_ids=ids, codes=codes, descriptions=descriptions, criticals=criticals
            )
        return [row["inserted"] for row in rows]
    if kind is LicenceRecord:
        query = db.queries.upsert_licences(
            conn,
            source=source,
            external_ids=[r.external_id for r in rs],
            shop_ids=shop_ids,
            numbers=[r.number for r in rs],
            kinds=[r.kind for r in rs],
            holder_usccs=[r.holder_uscc for r in rs],
            issued_ons=[r.issued_on for r in rs],
            valid_froms=[r.valid_from for r in rs],
            valid_tos=[r.valid_to for r in rs],
            statuses=[r.status for r in rs],
            updated_ats=[r.updated_at for r in rs],
        )
    elif kind is ReviewRecord:
        gone = [r for r in rs if r.rating is None]
        if gone:  # tombstones mark what is stored; the rest is upserted as usual
            marked = [
                row["inserted"]
                async for row in db.queries.delete_reviews(
                    conn,
                    source=source,
                    external_ids=[r.external_id for r in gone],
                    updated_ats=[r.updated_at for r in gone],
                )
            ]
            kept = [(r, s) for r, s in items if r.rating is not None]
            return marked + (await _upsert(conn, source, kind, kept) if kept else [])
        query = db.queries.upsert_reviews(
            conn,
            source=source,
            external_ids=[r.external_id for r in rs],
            shop_ids=shop_ids,
            ratings=[r.rating for r in rs],
            bodies=[r.body for r in rs],
            authors=[r.author for r in rs],
            posted_ats=[r.posted_at for r in rs],
            edited_ats=[r.edited_at for r in rs],
            deleteds=[r.deleted for r in rs],
            updated_ats=[r.updated_at for r in rs],
        )
    elif kind is SentimentRecord:
        query = db.queries.upsert_sentiment(
            conn,
            source=source,
            external_ids=[r.external_id for r in rs],
            shop_ids=shop_ids,
            titles=[r.title for r in rs],
            urls=[r.url for r in rs],
            summaries=[r.summary for r in rs],
            published_ats=[r.published_at for r in rs],
            tones=[r.tone for r in rs],
            confidences=[None if s is None else 1.0 for s in shop_ids],
        )
    else:  # pragma: no cover - a new record type needs its statement here
        raise TypeError(f"no statement stores {kind.__name__}")
    return [row["inserted"] async for row in query]
