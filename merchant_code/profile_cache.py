"""The scan's in-process cache of citizen profiles, checked against the stored version.

Each lookup is one indexed read of `shop_profile` by code that returns only the version when the
cached copy is current; the rendered page and JSON are kept per entry, so a repeated scan does no
template or JSON work. A bounded LRU per worker process.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import asyncpg
import msgspec

from merchant_code import db, profiles
from merchant_code.errors import NotFound
from merchant_code.views import CitizenShop

# The scan's hot path, the one statement it runs: a read by the profile's unique code that sends
# the document only when the caller's cached copy is out of date. Called on asyncpg directly
# (prepared once per connection): aiosql's per-call wrapper would cost more than the query.
CITIZEN_PROFILE = """
SELECT shop_id, version, CASE WHEN version = $2 THEN NULL ELSE citizen_doc END AS doc
FROM shop_profile WHERE code = $1
"""


class Entry:
    __slots__ = ("bodies", "shop", "shop_id", "version")

    def __init__(self, shop_id: int, version: int, shop: CitizenShop) -> None:
        self.shop_id = shop_id
        self.version = version
        self.shop = shop
        self.bodies: dict[str, bytes] = {}  # 'json', 'html:zh', 'html:en'

    def body(self, kind: str, make: Callable[[], bytes]) -> bytes:
        found = self.bodies.get(kind)
        if found is None:
            found = self.bodies[kind] = make()
        return found


class ProfileCache:
    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        self.hits = 0
        self.misses = 0

    async def citizen(self, conn: asyncpg.Connection, code: str) -> Entry:
        """The current citizen profile of a (valid, already parsed) code; NotFound if no shop."""
        entry = self.entries.get(code)
        row = await conn.fetchrow(CITIZEN_PROFILE, code, entry.version if entry else -1)
        if row is None:
            row = await self._build_missing(conn, code)
        if entry is not None and row["doc"] is None:
            self.hits += 1
            self.entries.move_to_end(code)
            return entry
        self.misses += 1
        entry = Entry(row["shop_id"], row["version"], msgspec.convert(row["doc"], CitizenShop))
        self.entries[code] = entry
        self.entries.move_to_end(code)
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)
        return entry

    async def _build_missing(self, conn: asyncpg.Connection, code: str) -> asyncpg.Record:
        """A shop registered a moment ago may not have a profile yet: build it once, now."""
        shop_id = await db.queries.get_shop_id_by_code(conn, code=code)
        if shop_id is None:
            raise NotFound("no shop has this code: the sticker is not valid")
        async with conn.transaction():
            await profiles.rebuild(conn, [shop_id])
        row = await conn.fetchrow(CITIZEN_PROFILE, code, -1)
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
