"""The scan's in-process cache of citizen answers, kept current by a change watermark.

The answers (JSON, the Chinese and the English page) are rendered when the profile is rebuilt and
stored in `citizen_answer`, one narrow row per kind, kept inline. A scan is one read by primary
key that returns only the version when this worker's copy is current, and the ready bytes when
it is not: no template or JSON work on any scan, cached or not. A bounded LRU per worker
process, keyed by code and answer kind. The same read brings the state of the key a sticker
names (genuine.py), so that telling a genuine sticker costs no second round trip.

A background task per worker (`Watermark`) asks, several times a second, which profiles changed
since its watermark and drops the entries whose version moved, and reads every key's state: while
it keeps succeeding, a cached scan is a memory lookup with no round trip at all. With the
database gone, cached shops are answered with the time their data was last confirmed; others get
503 at once.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections import OrderedDict
from typing import Literal, cast

import asyncpg

from merchant_code import db, db_health, notices, profiles, rendering
from merchant_code.errors import NotFound, Unavailable
from merchant_code.genuine import Key

Kind = Literal["json", "zh", "en"]

# The scan's hot path, the one statement it runs (per kind of answer). Called on asyncpg directly
# (prepared once per connection): aiosql's per-call wrapper would cost more than the query.
# $4 is the key id a sticker's signature names (NULL for none): its public half and state.
ANSWER = """
SELECT a.shop_id, a.version, a.status, CASE WHEN a.version = $3 THEN NULL ELSE a.body END AS body,
       a.audience, k.public_key,
       CASE WHEN k.revoked_at IS NOT NULL THEN 'revoked' WHEN k.retired_at IS NOT NULL THEN 'retired'
            ELSE 'active' END AS key_status
FROM citizen_answer a LEFT JOIN qr_key k ON k.kid = $4
WHERE a.code = $1 AND a.kind = $2
"""


# change_seq comes from a sequence, so values commit out of order: a rebuild holding seq 5 may
# commit after one holding 6 was seen. Each poll re-reads from the highest value it had seen
# WINDOW seconds before (longer than a drain's transaction lasts) and compares versions, so a
# late commit is still caught; so is an entry a miss stored from a read older than a change.
CHANGED = """
SELECT code, version, change_seq FROM shop_profile WHERE change_seq > $1
"""
KEYS = """
SELECT kid, public_key,
       CASE WHEN revoked_at IS NOT NULL THEN 'revoked' WHEN retired_at IS NOT NULL THEN 'retired'
            ELSE 'active' END AS key_status
FROM qr_key
"""
WINDOW = 10.0
SLACK = 1000  # at start, sequence values below the highest that may still be in flight

log = logging.getLogger("merchant_code.scan_cache")


class Entry:
    __slots__ = ("audience", "body", "cut", "epoch", "ncut", "shop_id", "status", "version")

    def __init__(
        self, shop_id: int, version: int, status: int, body: bytes, kind: Kind, audience: str | None = None
    ) -> None:
        self.shop_id = shop_id
        self.version = version
        self.status = status
        self.body = body
        # where the sticker's status and the trade's notices are spliced in (found once, not on
        # every scan), and whom those notices are for ("<trade> <area id>"; None: closed)
        self.cut = rendering.banner_cut(kind, body) if status == 200 else -1
        self.ncut = rendering.notices_cut(kind, body, self.cut)
        self.audience = audience
        self.epoch = 0  # the cache's epoch when this version was last known current


class ProfileCache:
    def __init__(self, max_entries: int, base: str) -> None:
        self.max_entries = max_entries
        self.base = base
        self.entries: OrderedDict[tuple[str, Kind], Entry] = OrderedDict()
        self.hits = 0
        self.misses = 0
        # set by the watermark: the key states, when changes were last confirmed, and an epoch
        # that moves after an outage so that entries from before it are checked once again
        self.keys: dict[str, Key] = {}
        self.confirmed = -1e18  # monotonic time of the last successful poll
        self.as_of: datetime.datetime | None = None
        self.epoch = 1
        self.fresh_for = 2.0  # a poll older than this does not vouch for the cache
        # the notices sent to whole trades, joined to the answers when served (the watermark
        # keeps them current)
        self.notices = notices.TradeNotices()

    def cached(self, code: str, kind: Kind, kid: str | None) -> tuple[Entry, Key | None] | None:
        """The answer from memory alone, when the watermark vouches for it; else None."""
        entry = self.entries.get((code, kind))
        if entry is None or entry.epoch != self.epoch:
            return None
        if time.monotonic() - self.confirmed > self.fresh_for:
            return None
        self.hits += 1
        self.entries.move_to_end((code, kind))
        return entry, None if kid is None else self.keys.get(kid)

    def stale(self, code: str, kind: Kind, kid: str | None) -> tuple[Entry, Key | None]:
        """While the database is unreachable: the last answer known, or 503 at once."""
        entry = self.entries.get((code, kind))
        if entry is None or self.as_of is None:
            raise Unavailable("the database is unreachable; try again in a moment", retry_after=2)
        return entry, None if kid is None else self.keys.get(kid)

    def changed(self, rows: list[asyncpg.Record]) -> None:
        for row in rows:
            for kind in ("json", "zh", "en"):
                entry = self.entries.get((row["code"], kind))
                if entry is not None and entry.version != row["version"]:
                    del self.entries[(row["code"], kind)]

    async def citizen(self, conn: asyncpg.Connection, code: str, kind: Kind = "json") -> Entry:
        """The current citizen answer of a (valid, already parsed) code; NotFound if no shop."""
        entry, _ = await self.scan(conn, code, kind, None)
        return entry

    async def scan(
        self, conn: asyncpg.Connection, code: str, kind: Kind, kid: str | None
    ) -> tuple[Entry, Key | None]:
        """The citizen answer, and the key `kid` if there is one of that id."""
        key = (code, kind)
        entry = self.entries.get(key)
        if not self.notices.loaded:  # no watermark has read them yet
            await self.notices.refresh(conn)
        row = await conn.fetchrow(ANSWER, code, kind, entry.version if entry else -1, kid)
        if row is None:
            row = await self._build_missing(conn, code, kind, kid)
        if entry is not None and row["body"] is None:
            self.hits += 1
        else:
            self.misses += 1
            entry = Entry(row["shop_id"], row["version"], row["status"], row["body"], kind, row["audience"])
        entry.epoch = self.epoch
        # other scans may have evicted or replaced it while this one waited for the database
        self.entries[key] = entry
        self.entries.move_to_end(key)
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)
        public_key = row["public_key"]
        return entry, None if public_key is None else Key(bytes(public_key), row["key_status"])

    async def _build_missing(
        self, conn: asyncpg.Connection, code: str, kind: Kind, kid: str | None
    ) -> asyncpg.Record:
        """A shop registered a moment ago may not have a profile (or its answers) yet: build it
        once, now."""
        shop_id = await db.queries.get_shop_id_by_code(conn, code=code)
        if shop_id is None:
            raise NotFound("no shop has this code: the sticker is not valid")
        async with conn.transaction():
            await profiles.rebuild(conn, [shop_id], base=self.base)
        row = await conn.fetchrow(ANSWER, code, kind, -1, kid)
        assert row is not None
        record: asyncpg.Record = row
        return record


async def full_profile(conn: asyncpg.Connection, cache: ProfileCache, code: str) -> asyncpg.Record:
    """Every document of one shop's profile (built first if the shop is new); NotFound if none."""
    row = await db.queries.get_full_profile(conn, code=code)
    if row is None:
        try:
            await cache.citizen(conn, code)
        except NotFound:
            raise NotFound("no such shop") from None  # the same words as for a shop one may not see
        row = await db.queries.get_full_profile(conn, code=code)
    if row is None:
        raise NotFound("no such shop")
    record: asyncpg.Record = row
    return record


class Watermark:
    """The poller of one worker: profiles changed since the watermark, every key's state, and
    the notices sent to whole trades."""

    def __init__(self, cache: ProfileCache, pool: asyncpg.Pool, interval: float) -> None:
        self.cache = cache
        self.pool = pool
        self.interval = interval
        cache.fresh_for = max(2.0, 4 * interval)
        self.seen: int | None = None  # the highest change_seq read
        self.history: list[tuple[float, int]] = []  # (when, highest seen then)
        self.timeouts = 0  # polls timed out in a row

    def since(self, now: float) -> int:
        """Re-read from the highest value seen WINDOW seconds ago (late commits land there)."""
        while len(self.history) > 1 and now - self.history[1][0] >= WINDOW:
            self.history.pop(0)
        return self.history[0][1]

    async def poll(self, conn: asyncpg.Connection) -> None:
        now = time.monotonic()
        if self.seen is None:
            top = await conn.fetchval("SELECT coalesce(max(change_seq), 0) FROM shop_profile")
            self.seen = top
            self.history = [(now, max(0, top - SLACK))]
        rows = await conn.fetch(CHANGED, self.since(now))
        keys = {r["kid"]: Key(bytes(r["public_key"]), r["key_status"]) for r in await conn.fetch(KEYS)}
        await self.cache.notices.refresh(conn)
        self.cache.changed(rows)
        self.cache.keys = keys
        if rows:
            self.seen = max(self.seen, max(r["change_seq"] for r in rows))
        self.history.append((now, self.seen))
        self.cache.confirmed = now
        self.cache.as_of = datetime.datetime.now(datetime.UTC)

    async def once(self) -> None:
        health = db_health.state
        try:
            async with asyncio.timeout(max(2.0, 4 * self.interval)), self.pool.acquire() as conn:
                await self.poll(cast(asyncpg.Connection, conn))
        except db_health.LOST as exc:
            self.timeouts = self.timeouts + 1 if isinstance(exc, TimeoutError) else 0
            if db_health.is_lost(exc) or self.timeouts >= db_health.TIMEOUTS_BEFORE_DOWN:
                health.lost(exc)
            return
        self.timeouts = 0
        if health.down:
            # entries from before the outage are checked once more, lazily, on their next scan
            self.cache.epoch += 1
            health.reached()

    async def run(self) -> None:
        while True:
            try:
                await self.once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the scan cache's watermark poll failed")
            await asyncio.sleep(self.interval)
