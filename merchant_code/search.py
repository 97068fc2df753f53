"""Shop search by name, ranked as a citizen expects and paid for by the page, not by the matches.

Each shop's names are kept as postings (migration 0033): one row per distinct lowercased
two-character fragment of the Chinese name and of name_en, and one for the first character of
each, in a btree ordered (fragment, tier, code) with trade, area and closed beside it. Tier 0: the
name is the query, 1: it starts with it, 2: it holds it elsewhere.

- One or two characters: one walk of that fragment's postings in (tier, code) order, the filters
  applied as it goes, stopped after a page. One character finds the names that start with it.
- Longer: the postings of the query's rarest fragment (counted no further than `CAP`) are the
  candidates, ranked and checked against the whole query. When even the rarest fragment is
  common, the GIN index of fragments intersects them all (cheap exactly when matches are rare).
- With a position: a rare query's candidates are sorted by distance; a common one walks the KNN
  index and keeps the names that match (dense, so the walk is short).

The cursor of a page by name is its last shop's tier and code (`2` + 13 symbols), so pages never
repeat or skip a shop.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec

from merchant_code import db
from merchant_code.errors import InvalidInput

# postings of one fragment past which it counts as common: a rare query's candidates are read
# whole (this many heap rows at most); a common one is walked in page order instead
CAP = 2000

_CODE_CURSOR = re.compile(r"^[0-9A-Z]{0,13}$")
_RANKED_CURSOR = re.compile(r"^[0-2][0-9A-Z]{13}$")


class BadCursor(InvalidInput):
    """A cursor this search did not hand out: a 400 naming it."""

    status = 400


class Filters(msgspec.Struct, frozen=True):
    trade: str | None = None
    area_ids: list[int] | None = None
    grade: str | None = None
    include_closed: bool = False


class Cursor(msgspec.Struct, frozen=True):
    tier: int
    code: str


def parse_cursor(after: str, *, ranked: bool) -> Cursor:
    """The position `after` names: a code alone, or a tier and a code when the search is by name."""
    after = after.upper()
    if not after:
        return Cursor(-1, "")
    if ranked and _RANKED_CURSOR.match(after):
        return Cursor(int(after[0]), after[1:])
    if not ranked and _CODE_CURSOR.match(after):
        return Cursor(-1, after)
    raise BadCursor("after", "not a cursor of this search: pass the next_after of the page before, unchanged")


def next_cursor(row: asyncpg.Record) -> str:
    tier = row["tier"]
    return str(row["code"]) if tier is None else f"{tier}{row['code']}"


async def find(
    conn: Any, q: str | None, filters: Filters, cursor: Cursor, limit: int
) -> list[asyncpg.Record]:
    """A page of shops in rank order (q) or code order (no q), after the cursor."""
    common = msgspec.structs.asdict(filters)
    page = {"after_tier": cursor.tier, "after_code": cursor.code, "limit": limit, **common}
    if q is None:
        return await _rows(db.queries.search_shops(conn, after=cursor.code, limit=limit, **common))
    if len(q) <= 2:
        return await _rows(db.queries.search_shops_by_gram(conn, q=q, **page))
    gram = await rare_gram(conn, q)
    return await _rows(db.queries.search_shops_by_name(conn, q=q, gram=gram, **page))


async def find_near(
    conn: Any,
    q: str | None,
    filters: Filters,
    *,
    lat: float,
    lon: float,
    radius_m: int,
    offset: int,
    limit: int,
) -> list[asyncpg.Record]:
    """A page of shops within radius_m of (lat, lon), nearest first."""
    gram = None if q is None else await rare_gram(conn, q)
    return await _rows(
        db.queries.search_shops_near(
            conn,
            q=q,
            gram=gram,
            lat=lat,
            lon=lon,
            radius_m=radius_m,
            offset=offset,
            limit=limit,
            **msgspec.structs.asdict(filters),
        )
    )


async def rare_gram(conn: Any, q: str) -> str | None:
    """q's rarest fragment when it has at most CAP postings; None when every one is common."""
    row = await db.queries.get_rarest_name_gram(conn, q=q, cap=CAP)
    return None if row is None or row["n"] > CAP else str(row["gram"])


async def _rows(query: AsyncIterator[asyncpg.Record]) -> list[asyncpg.Record]:
    return [r async for r in query]
