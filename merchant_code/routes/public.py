"""The public API, versioned under /api/v1: search shops, one shop's public profile, and the
change feed of profiles. Public fields only (the citizen's document). Every answer carries an
ETag, Last-Modified and the profile's freshness, and the rate-limit headers of the IETF draft
(RateLimit-Limit, -Remaining, -Reset, -Policy): `PUBLIC_RATE` requests a minute per client
address, whatever the number of worker processes, then 429 (client_limits.py).
"""

from __future__ import annotations

import datetime
import hashlib
from email.utils import format_datetime, parsedate_to_datetime
from typing import Annotated, Any, Literal

import asyncpg
import msgspec
from litestar import Request, Response, Router, get
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import FromPath, FromQuery, QueryParameter

from merchant_code import db
from merchant_code import search as search_
from merchant_code.bulkheads import SearchAdmission
from merchant_code.client_limits import PublicLimit
from merchant_code.codes import parse_shop_code
from merchant_code.decoding import BIGINT_MAX
from merchant_code.errors import InvalidInput, NotFound
from merchant_code.routes.exports import download_export, export_status, request_export
from merchant_code.routes.params import PageSize, check_coordinates
from merchant_code.views import CitizenShop

CHANGES_MAX = 1000


class PublicShop(msgspec.Struct, frozen=True):
    code: str
    name: str
    name_en: str | None
    trade: str
    trade_name: str
    trade_name_en: str
    area_code: str
    area_name: str
    address: str | None
    lat: float | None
    lon: float | None
    status: str
    grade: str | None
    grade_date: datetime.date | None
    rating: float | None
    review_count: int
    distance_m: int | None
    url: str
    profile_updated_at: datetime.datetime | None


class ShopPage(msgspec.Struct, frozen=True):
    items: list[PublicShop]
    # the cursor of the next page: `after` when sorted by code, `offset` when sorted by distance
    next_after: str | None = None
    next_offset: int | None = None


class Change(msgspec.Struct, frozen=True):
    seq: int
    code: str
    version: int
    changed_at: datetime.datetime
    profile: dict[str, Any]


class Changes(msgspec.Struct, frozen=True):
    items: list[Change]
    next_since: int


class PublicProfile(CitizenShop, frozen=True, kw_only=True):
    """One shop's public document, as `shop` sends it (pre-encoded, so only documented here)."""

    profile_version: int
    profile_updated_at: datetime.datetime | None


def _body(struct: type[Any], description: str) -> dict[int, ResponseSpec]:
    """The 200 of a handler answering pre-encoded bytes: what those bytes are, for the document."""
    return {200: ResponseSpec(data_container=struct, generate_examples=False, description=description)}


def _cached(
    request: Request[Any, Any, Any], body: bytes, modified: datetime.datetime | None, max_age: int = 60
) -> Response[bytes]:
    """A JSON answer with a strong ETag of its bytes and Last-Modified; 304 when the caller has it."""
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": f"public, max-age={max_age}"}
    if modified is not None:
        headers["Last-Modified"] = format_datetime(modified.astimezone(datetime.UTC), usegmt=True)
    if request.headers.get("if-none-match") == etag or _not_modified_since(request, modified):
        return Response(b"", status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


def _not_modified_since(request: Request[Any, Any, Any], modified: datetime.datetime | None) -> bool:
    since = request.headers.get("if-modified-since")
    if since is None or modified is None or request.headers.get("if-none-match"):
        return False
    try:
        return modified.replace(microsecond=0) <= parsedate_to_datetime(since)
    except (TypeError, ValueError):
        return False


Query = Annotated[
    str | None,
    QueryParameter(
        min_length=1,
        max_length=50,
        description="part of the name, Chinese or English: one character finds the names that start with"
        " it; two or more, the names that hold it. Exact names first, then names that start with it",
        examples=[Example(value="面馆")],
    ),
]
Trade = Annotated[str | None, QueryParameter(max_length=40, examples=[Example(value="catering")])]
Area = Annotated[
    str | None,
    QueryParameter(
        pattern=r"^[0-9]{6,15}$",
        description="an area's code: it and every area below it",
        examples=[Example(value="310104")],
    ),
]
Lat = Annotated[float | None, QueryParameter(ge=-90, le=90, examples=[Example(value=31.19)])]
Lon = Annotated[float | None, QueryParameter(ge=-180, le=180, examples=[Example(value=121.43)])]
Radius = Annotated[int, QueryParameter(ge=10, le=20_000, description="metres from (lat, lon)")]
Offset = Annotated[int, QueryParameter(ge=0, le=1000, description="with lat/lon: skip this many")]
After = Annotated[
    str,
    QueryParameter(
        max_length=14,
        pattern=r"^[0-9A-Za-z]*$",
        description="without lat/lon: the next_after of the page before, unchanged (another is a 400)",
    ),
]


@get("/shops", opt={"access": "public"}, tags=["public"], responses=_body(ShopPage, "A page of shops"))
async def search(
    request: Request[Any, Any, Any],
    state: State,
    conn: NamedDependency[asyncpg.Connection],
    q: Query = None,
    trade: Trade = None,
    area: Area = None,
    grade: Annotated[Literal["A", "B", "C"] | None, QueryParameter()] = None,
    lat: Lat = None,
    lon: Lon = None,
    radius_m: Radius = 3000,
    include_closed: FromQuery[bool] = False,
    limit: PageSize = 20,
    after: After = "",
    offset: Offset = 0,
) -> Response[bytes]:
    """Search shops by name, trade, area (and below) and grade; with `lat` and `lon`, the shops
    within `radius_m` nearest first, each with its distance. At most 100 a page."""
    if (lat is None) != (lon is None):
        raise InvalidInput("lon" if lon is None else "lat", "give both lat and lon, or neither")
    check_coordinates(lat=lat, lon=lon)
    area_ids = None
    if area is not None:
        prefix = await db.queries.get_area_path(conn, code=area)
        if prefix is None:
            raise InvalidInput("area", f"no area has the code {area}")
        area_ids = [r["id"] async for r in db.queries.list_area_ids(conn, path=prefix)]
    filters = search_.Filters(trade=trade, area_ids=area_ids, grade=grade, include_closed=include_closed)
    if lat is not None and lon is not None:
        rows = await search_.find_near(
            conn, q, filters, lat=lat, lon=lon, radius_m=radius_m, offset=offset, limit=limit
        )
    else:
        cursor = search_.parse_cursor(after, ranked=q is not None)
        rows = await search_.find(conn, q, filters, cursor, limit)
    base = state.settings.base_url
    items = [
        PublicShop(
            **{k: r[k] for k in PublicShop.__struct_fields__ if k not in ("url", "profile_updated_at")},
            url=f"{base}/s/{r['code']}",
            profile_updated_at=r["rebuilt_at"],
        )
        for r in rows
    ]
    full = len(items) == limit
    page = ShopPage(
        items=items,
        next_after=search_.next_cursor(rows[-1]) if full and lat is None else None,
        next_offset=offset + limit if full and lat is not None else None,
    )
    newest = max((r["rebuilt_at"] for r in rows if r["rebuilt_at"] is not None), default=None)
    return _cached(request, msgspec.json.encode(page), newest)


@get(
    "/shops/{code:str}",
    opt={"access": "public"},
    tags=["public"],
    responses=_body(PublicProfile, "The shop's public profile"),
)
async def shop(
    request: Request[Any, Any, Any], conn: NamedDependency[asyncpg.Connection], code: FromPath[str]
) -> Response[bytes]:
    """One shop's public profile: licence states, grade and its date, recent inspections, rating
    and reviews, news items, honours, notices, and `freshness` (when each part last changed)."""
    row = await db.queries.get_public_profile(conn, code=parse_shop_code(code))
    if row is None:
        raise NotFound("no shop has this code")
    doc = dict(row["citizen_doc"])
    # the newest notices sent to the shop's whole trade and area: joined now, not stored
    trade_notices = request.app.state.profile_cache.notices
    if not trade_notices.loaded:
        await trade_notices.refresh(conn)
    joined = trade_notices.joined(row["audience"]).notices
    doc["notices"] = joined
    doc["profile_version"] = row["version"]
    doc["profile_updated_at"] = row["rebuilt_at"]
    # the notices may have changed (one sent, one withdrawn) without the profile: modified then
    modified = max(row["rebuilt_at"], trade_notices.changed_at or row["rebuilt_at"])
    return _cached(request, msgspec.json.encode(doc), modified)


@get(
    "/changes",
    opt={"access": "public"},
    tags=["public"],
    responses=_body(Changes, "Profiles changed after `since`"),
)
async def changes(
    request: Request[Any, Any, Any],
    conn: NamedDependency[asyncpg.Connection],
    since: Annotated[
        int, QueryParameter(ge=0, le=BIGINT_MAX, description="the next_since of the page before; 0 to start")
    ] = 0,
    limit: Annotated[int, QueryParameter(ge=1, le=CHANGES_MAX)] = 500,
) -> Response[bytes]:
    """Profiles that changed after `since`, in the order they changed, each with its public
    document: a consumer keeps `next_since` and asks again to stay in step."""
    rows = [r async for r in db.queries.list_profile_changes(conn, since=since, limit=limit)]
    items = [
        Change(
            seq=r["change_seq"],
            code=r["code"],
            version=r["version"],
            changed_at=r["rebuilt_at"],
            profile=r["citizen_doc"],
        )
        for r in rows
    ]
    page = Changes(items=items, next_since=items[-1].seq if items else since)
    newest = rows[-1]["rebuilt_at"] if rows else None
    return _cached(request, msgspec.json.encode(page), newest, max_age=0)


# the public API's own router: the rate limit (and its headers) applies to these routes only,
# so the scan's hot path pays nothing for it
router = Router(
    path="/api/v1",
    route_handlers=[search, shop, changes, request_export, export_status, download_export],
    # its own share of each worker (bulkheads.py): a few at once on their own connections
    middleware=[PublicLimit(), SearchAdmission()],
    dependencies={"conn": Provide(db.provide_search_db)},
    tags=["public"],
)
