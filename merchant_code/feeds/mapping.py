"""Hand mappings from a source's business ids to shops, and what waits in quarantine meanwhile.

A record that no shop matched (by the source's mapping, USCC, licence number, name and address)
waits in quarantine with the reason "no shop in the register matches ..." and the record as JSON.
`feeds unmatched` groups what waits by business id with the shop most like it; `feeds map` adds
mappings (one, or a CSV file all or nothing), audited. Records waiting for a mapped business land
at the source's next pull: the mapping comes first in matching, and the source's cursor is reset
so that a source read by changes (a review platform) reads them again; a snapshot source (LIVES,
FHRS) reads every record at each pull anyway.
"""

from __future__ import annotations

import csv
import io
from typing import Any, NamedTuple

import asyncpg
import msgspec

from merchant_code import audit, db
from merchant_code.codes import parse_shop_code
from merchant_code.errors import BadArgument, InvalidInput
from merchant_code.feeds.base import Match

MAX_ID = 500  # the longest business id kept (a reject's external id is cut there too)


class Pair(NamedTuple):
    line: int | None  # the CSV line, None for one mapping given on the command line
    external_id: str
    shop_code: str


class Mapped(NamedTuple):
    external_id: str
    shop_code: str
    shop_name: str
    previous: str | None  # the shop code it named before, if any


class Added(NamedTuple):
    mapped: list[Mapped]
    waiting: int  # records in quarantine that the next pull lands


class Waiting(msgspec.Struct, frozen=True):
    business_id: str
    records: int
    name: str | None = None
    address: str | None = None
    postal_code: str | None = None
    lat: float | None = None
    lon: float | None = None
    candidate_code: str | None = None
    candidate_name: str | None = None
    candidate_address: str | None = None
    why: str | None = None


def _at(line: int | None) -> str:
    return f"line {line}: " if line is not None else ""


def read_csv(data: bytes, name: str) -> list[Pair]:
    """The mappings of a CSV file with a header naming `external_id` and `shop_code` (other
    columns are ignored); the first line at fault is named."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadArgument(f"{name}: not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [cell.strip().lower() for cell in next(reader, [])]
        if "external_id" not in header or "shop_code" not in header:
            raise BadArgument(f"{name}: line 1 must be a header naming external_id and shop_code")
        at_id, at_code = header.index("external_id"), header.index("shop_code")
        pairs = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue  # a blank line
            if len(row) != len(header):
                raise BadArgument(
                    f"{name}: line {reader.line_num}: {len(row)} fields, the header has {len(header)}"
                )
            pairs.append(Pair(reader.line_num, row[at_id], row[at_code]))
    except csv.Error as exc:
        raise BadArgument(f"{name}: line {reader.line_num}: {exc}") from None
    if not pairs:
        raise BadArgument(f"{name}: no mappings after the header")
    return pairs


async def _source(conn: asyncpg.Connection, name: str) -> asyncpg.Record:
    source: asyncpg.Record | None = await db.queries.get_feed_source(conn, name=name)
    if source is None:
        raise BadArgument(f"no feed source is named {name!r} (see `merchant-code feeds status`)")
    return source


async def _checked(conn: asyncpg.Connection, pairs: list[Pair]) -> list[tuple[Pair, str, Any]]:
    """Each pair with its canonical shop code and shop row; the first one at fault raises."""
    seen: dict[str, int | None] = {}
    codes: list[str] = []
    for pair in pairs:
        external_id = pair.external_id.strip()
        if not external_id or len(external_id) > MAX_ID or not external_id.isprintable():
            raise BadArgument(f"{_at(pair.line)}external id must be 1-{MAX_ID} printable characters")
        if external_id in seen:
            raise BadArgument(
                f"{_at(pair.line)}external id {external_id!r} is mapped on line {seen[external_id]} too"
            )
        seen[external_id] = pair.line
        try:
            codes.append(parse_shop_code(pair.shop_code))
        except InvalidInput as exc:
            raise BadArgument(f"{_at(pair.line)}shop code {pair.shop_code.strip()!r}: {exc.detail}") from None
    shops = {r["code"]: r async for r in db.queries.list_shops_by_codes(conn, codes=codes)}
    for pair, code in zip(pairs, codes, strict=True):
        if code not in shops:
            raise BadArgument(f"{_at(pair.line)}no shop has the code {code}")
    return [
        (pair._replace(external_id=pair.external_id.strip()), code, shops[code])
        for pair, code in zip(pairs, codes, strict=True)
    ]


async def add(
    conn: asyncpg.Connection, source_name: str, pairs: list[Pair], origin: str | None = None
) -> Added:
    """Add (or replace) the mappings, all or none, each audited; reset the source's cursor when
    records wait in quarantine for them."""
    async with conn.transaction():
        source = await _source(conn, source_name)
        checked = await _checked(conn, pairs)
        ids = [pair.external_id for pair, _, _ in checked]
        waiting = sum(w.records for w in await _waiting(conn, source["id"], set(ids)))
        previous = {
            r["business_id"]: r["previous"]
            async for r in db.queries.upsert_manual_shop_maps(
                conn,
                source_id=source["id"],
                business_ids=ids,
                shop_ids=[shop["id"] for _, _, shop in checked],
            )
        }
        mapped = [
            Mapped(pair.external_id, code, shop["name"], previous.get(pair.external_id))
            for pair, code, shop in checked
        ]
        for m in mapped:
            detail = {
                "external_id": m.external_id,
                "shop_code": m.shop_code,
                "previous": m.previous,
                "file": origin,
            }
            await audit.append(
                conn,
                actor=None,
                action="feed.map",
                object_type="feed_source",
                object_id=source_name,
                detail=detail,
            )
        if waiting:
            await db.queries.set_feed_cursor(conn, id=source["id"], cursor=None)
    return Added(mapped, waiting)


class _Kept(msgspec.Struct):
    """A quarantined record as the runner keeps one no shop matched (its JSON encoding)."""

    external_id: str | None = None
    match: Match | None = None


async def _waiting(conn: asyncpg.Connection, source_id: int, only: set[str] | None = None) -> list[Waiting]:
    """What waits for a shop, by business id (only those in `only`, when given)."""
    found: dict[str, dict[str, Any]] = {}
    async for row in db.queries.list_unmatched_feed_rejects(conn, source_id=source_id):
        try:
            kept = msgspec.json.decode(row["raw_bytes"] or b"", type=_Kept)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            continue  # cut short in quarantine (a record over its size limit): nothing to map by
        match = kept.match or Match()
        business_id = match.business_id or (kept.external_id if row["reason"].endswith("business") else None)
        if business_id is None or (only is not None and business_id not in only):
            continue
        entry = found.setdefault(business_id, {"keys": set(), "business_id": business_id})
        entry["keys"].add((row["reason"], row["external_id"]))
        if row["reason"].endswith("business"):  # the business as the source describes it
            entry.update(
                name=match.name,
                address=match.address,
                postal_code=match.postal_code,
                lat=match.lat,
                lon=match.lon,
            )
    mapped = {
        r["business_id"]
        async for r in db.queries.list_mapped_business_ids(
            conn, source_id=source_id, business_ids=list(found)
        )
    }
    return [
        Waiting(records=len(e.pop("keys")), **e)
        for business_id, e in found.items()
        if business_id not in mapped
    ]


async def unmatched(conn: asyncpg.Connection, source_name: str, limit: int) -> tuple[int, list[Waiting]]:
    """How many businesses wait, and the `limit` with most records waiting, each with the shop
    most like it."""
    source = await _source(conn, source_name)
    waiting = sorted(await _waiting(conn, source["id"]), key=lambda w: (-w.records, w.business_id))
    shown = waiting[:limit]
    candidates = db.queries.list_shop_candidates(
        conn,
        names=[w.name for w in shown],
        addresses=[w.address for w in shown],
        lats=[w.lat for w in shown],
        lons=[w.lon for w in shown],
    )
    listed = [
        msgspec.structs.replace(
            w,
            candidate_code=c["code"],
            candidate_name=c["name"],
            candidate_address=c["address"],
            why=c["why"],
        )
        async for c in candidates
        for w in (shown[c["n"] - 1],)
    ]
    return len(waiting), listed
