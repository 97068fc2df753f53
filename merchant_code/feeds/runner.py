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
import functools
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

from merchant_code import db, load
from merchant_code.codes import parse_uscc
from merchant_code.errors import InvalidInput, NotFound
from merchant_code.feeds import http as feed_http
from merchant_code.feeds import limits as feed_limits
from merchant_code.feeds import quality, quarantine
from merchant_code.feeds.base import (
    CONTENT_ID_PREFIX,
    InspectionRecord,
    LicenceRecord,
    Parsed,
    Reject,
    ReviewRecord,
    SentimentRecord,
    ShopRecord,
    by_content,
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
            # one line, and never a database error's detail: it quotes the failing row
            result.error = quarantine.error_text(exc)
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
            await load.pause_if_busy()


def _cursor(stored: Any) -> str | None:
    return None if stored is None else str(stored)


def _raw(record: Any) -> bytes:
    return msgspec.json.encode(record)


async def store(conn: asyncpg.Connection, source_id: int, source: str, run_id: int, parsed: Parsed) -> Counts:
    """One page's records into the database, set-based per kind of record. A record the database
    refuses is quarantined with the rule it broke and the rest of the page is stored (see
    quarantine.split); each statement runs in a savepoint for that."""
    counts = Counts(fetched=len(parsed.records) + len(parsed.rejects))
    rejects: list[tuple[Reject, str | None]] = [(r, None) for r in parsed.rejects]
    records, shops = await _matched(conn, source_id, list(parsed.records), rejects)

    mapping = [(r, s, w) for r, (s, w) in zip(records, shops, strict=True) if isinstance(r, ShopRecord)]
    known = [(r, s, w) for r, s, w in mapping if s is not None]
    for r, s, _ in mapping:
        if s is None:
            why = "no shop in the register matches this business"
            rejects.append((Reject(_raw(r), why, r.external_id), "shop"))
    if known:
        # one row per business id (the last the page gives), so one statement touches each once
        learned = {r.match.business_id or r.external_id: (s, w) for r, s, w in known}
        await _learn(conn, source_id, run_id, learned, known, counts, rejects)
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
            why = "no shop in the register matches this record"
            rejects.append((Reject(_raw(record), why, record.external_id), _KIND[type(record)]))
            continue
        grouped.setdefault(type(record), []).append((record, shop_id))

    for kind, items in grouped.items():
        items = _last_of_each(items)
        counts.unchanged += len(grouped[kind]) - len(items)  # the same record twice on one page
        stored, refused = await quarantine.split(conn, items, functools.partial(_upsert, conn, source, kind))
        for batch, changed in stored:
            _count(counts, changed, len(batch))
        for (record, _), why in refused:
            rejects.append((Reject(_raw(record), why, record.external_id), _KIND[kind]))
        landed = [record.external_id for batch, _ in stored for record, _ in batch]
        await quarantine.resolve(conn, run_id, source_id, _KIND[kind], landed)

    await quarantine.keep(conn, run_id, source_id, rejects)
    counts.quarantined = len(rejects)
    return counts


_KIND: dict[type, str] = {
    InspectionRecord: "inspection",
    LicenceRecord: "licence",
    ReviewRecord: "review",
    SentimentRecord: "sentiment",
    ShopRecord: "shop",
}


async def _matched(
    conn: asyncpg.Connection, source_id: int, records: list[Any], rejects: list[tuple[Reject, str | None]]
) -> tuple[list[Any], list[tuple[int | None, str | None]]]:
    """The records the database could look up, in page order, with the shop each is about; one
    whose values it refuses even to compare (a NUL in a name) is quarantined."""
    numbered = list(enumerate(records))
    stored, refused = await quarantine.split(
        conn, numbered, lambda batch: _resolve(conn, source_id, [r for _, r in batch])
    )
    found = {n: shop for batch, shops in stored for (n, _), shop in zip(batch, shops, strict=True)}
    for (_, record), why in refused:
        rejects.append((Reject(_raw(record), why, record.external_id), _KIND[type(record)]))
    kept = sorted(found)
    return [records[n] for n in kept], [found[n] for n in kept]


async def _learn(
    conn: asyncpg.Connection,
    source_id: int,
    run_id: int,
    learned: dict[str, tuple[int, str | None]],
    known: list[tuple[ShopRecord, int, str | None]],
    counts: Counts,
    rejects: list[tuple[Reject, str | None]],
) -> None:
    """The page's business ids mapped to the shops they matched; a business id the database
    refuses (one too long for its index) quarantines the shop records that carry it."""

    async def upsert(batch: list[tuple[str, tuple[int, str | None]]]) -> list[bool]:
        rows = db.queries.upsert_shop_map(
            conn,
            source_id=source_id,
            business_ids=[b for b, _ in batch],
            shop_ids=[s for _, (s, _) in batch],
            matched_bys=[w for _, (_, w) in batch],
        )
        return [row["inserted"] async for row in rows]

    stored, refused = await quarantine.split(conn, list(learned.items()), upsert)
    why = {business_id: reason for (business_id, _), reason in refused}
    kept = [r for r, _, _ in known if (r.match.business_id or r.external_id) not in why]
    for r, _, _ in known:
        if (reason := why.get(r.match.business_id or r.external_id)) is not None:
            rejects.append((Reject(_raw(r), reason, r.external_id), "shop"))
    _count(counts, [flag for _, flags in stored for flag in flags], len(kept))
    await quarantine.resolve(conn, run_id, source_id, "shop", [r.external_id for r in kept])


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
        # and one that keys them by a licence number (a LIVES business_id often is one)
        licence_numbers=[r.match.licence_number or _as_licence(r.match.business_id) for r in records],
        names=[r.match.name for r in records],
        addresses=[r.match.address for r in records],
    )
    return [(row["shop_id"], row["matched_by"]) async for row in rows]


async def _identities(
    conn: asyncpg.Connection, source: str, records: list[InspectionRecord]
) -> list[InspectionRecord]:
    """The records keyed as the source's ids deserve. A source whose ids moved once (a visit of
    this page stored under another of its ids: a row counter that re-sorting renumbered) is keyed
    by content from then on: its stored rows are re-keyed first, in this transaction, so nothing
    is added twice and nothing moves to another shop."""
    keyed = [r for r in records if r.content_key is not None]
    if not keyed:
        return records
    unstable = await db.queries.get_feed_source_unstable_ids(conn, name=source)
    if not unstable:
        unstable = await db.queries.find_moved_inspections(
            conn,
            source=source,
            external_ids=[r.external_id for r in keyed],
            content_keys=[r.content_key for r in keyed],
        )
        if unstable:
            await db.queries.rekey_inspections_by_content(conn, source=source)
    if not unstable:
        return records
    plain = [r for r in records if not r.external_id.startswith(CONTENT_ID_PREFIX)]
    if len(plain) < len(records):  # keyed by content already (the source's config says so)
        return records
    return by_content(records)


def _as_uscc(value: str | None) -> str | None:
    if value is None or len(value.strip()) != 18:
        return None
    try:
        return parse_uscc(value)
    except InvalidInput:
        return None


def _as_licence(value: str | None) -> str | None:
    """A business id tried as a licence number: a USCC is not one (the USCC lookup has it)."""
    if value is None or not value.strip() or _as_uscc(value) is not None:
        return None
    return value.strip()


async def _upsert(
    conn: asyncpg.Connection, source: str, kind: type, items: list[tuple[Any, int | None]]
) -> list[bool]:
    rs = [r for r, _ in items]
    shop_ids = [s for _, s in items]
    if kind is InspectionRecord:
        rs = await _identities(conn, source, rs)
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
                score_scales=[r.score_scale for r in rs],
                results=[r.result for r in rs],
                grades=[r.grade for r in rs],
                summaries=[r.description for r in rs],
                updated_ats=[r.updated_at for r in rs],
                content_keys=[r.content_key for r in rs],
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
