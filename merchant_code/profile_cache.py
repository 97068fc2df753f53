"""The scan's in-process cache of citizen answers, checked against the stored version.

The answers (JSON, the Chinese and the English page) are rendered when the profile is rebuilt and
stored in `citizen_answer`, one narrow row per kind, kept inline. A scan is one read by primary
key that returns only the version when this worker's copy is current, and the ready bytes when
it is not: no template or JSON work on any scan, cached or not. A bounded LRU per worker
process, keyed by code and answer kind. The same read brings the state of the key a sticker
names (genuine.py), so that telling a genuine sticker costs no second round trip.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

import asyncpg

from merchant_code import db, profiles, rendering
from merchant_code.errors import NotFound
from merchant_code.genuine import Key

Kind = Literal["json", "zh", "en"]

# The scan's hot path, the one statement it runs (per kind of answer). Called on asyncpg directly
# (prepared once per connection): aiosql's per-call wrapper would cost more than the query.
# $4 is the key id a sticker's signature names (NULL for none): its public half and state.
ANSWER = """
SELECT a.shop_id, a.version, a.status, CASE WHEN a.version = $3 THEN NULL ELSE a.body END AS body,
       k.public_key,
       CASE WHEN k.revoked_at IS NOT NULL THEN 'revoked' WHEN k.retired_at IS NOT NULL THEN 'retired'
            ELSE 'active' END AS key_status
FROM citizen_answer a LEFT JOIN qr_key k ON k.kid = $4
WHERE a.code = $1 AND a.kind = $2
"""


class Entry:
    __slots__ = ("body", "cut", "shop_id", "status", "version")

    def __init__(self, shop_id: int, version: int, status: int, body: bytes, kind: Kind) -> None:
        self.shop_id = shop_id
        self.version = version
        self.status = status
        self.body = body
        # where the sticker's status is spliced in (found once, not on every scan)
        self.cut = rendering.banner_cut(kind, body) if status == 200 else -1


class ProfileCache:
    def __init__(self, max_entries: int, base: str) -> None:
        self.max_entries = max_entries
        self.base = base
        self.entries: OrderedDict[tuple[str, Kind], Entry] = OrderedDict()
        self.hits = 0
        self.misses = 0

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
        row = await conn.fetchrow(ANSWER, code, kind, entry.version if entry else -1, kid)
        if row is None:
            row = await self._build_missing(conn, code, kind, kid)
        if entry is not None and row["body"] is None:
            self.hits += 1
        else:
            self.misses += 1
            entry = Entry(row["shop_id"], row["version"], row["status"], row["body"], kind)
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
