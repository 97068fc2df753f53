"""An FHRS-style establishments API (UK Food Standards Agency API v2 and sources shaped like it).

Each establishment is a ShopRecord, and an InspectionRecord `FHRSID|RatingDate` when it has been
rated. The API offers no "changed since": every run walks all pages from the first, so the last
page hands back no cursor and the next run starts over.
"""

from __future__ import annotations

import datetime
import math
from typing import Annotated, Literal

import httpx
import msgspec

from merchant_code.feeds.base import (
    FeedError,
    InspectionRecord,
    Match,
    Page,
    Parsed,
    Record,
    Reject,
    ShopRecord,
)

KIND = "fhrs"


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    url: str  # the establishments endpoint, e.g. http://127.0.0.1:8123/Establishments
    page_size: Annotated[int, msgspec.Meta(ge=1, le=5000)] = 500
    api_version: str = "2"


class _Meta(msgspec.Struct):
    total_pages: int | None = msgspec.field(default=None, name="totalPages")


class _Envelope(msgspec.Struct):
    meta: _Meta | None = None


class _Listing(msgspec.Struct):
    # kept raw so that a bad establishment is quarantined exactly as it came
    establishments: list[msgspec.Raw]


class _Geocode(msgspec.Struct):
    longitude: float | str | None = None
    latitude: float | str | None = None


class _Scores(msgspec.Struct):
    hygiene: float | str | None = msgspec.field(default=None, name="Hygiene")
    structural: float | str | None = msgspec.field(default=None, name="Structural")
    management: float | str | None = msgspec.field(default=None, name="ConfidenceInManagement")


class _Establishment(msgspec.Struct):
    fhrsid: int | str | None = msgspec.field(default=None, name="FHRSID")
    name: str | None = msgspec.field(default=None, name="BusinessName")
    line1: str | None = msgspec.field(default=None, name="AddressLine1")
    line2: str | None = msgspec.field(default=None, name="AddressLine2")
    line3: str | None = msgspec.field(default=None, name="AddressLine3")
    line4: str | None = msgspec.field(default=None, name="AddressLine4")
    postcode: str | None = msgspec.field(default=None, name="PostCode")
    phone: str | None = msgspec.field(default=None, name="Phone")
    rating_value: int | str | None = msgspec.field(default=None, name="RatingValue")
    rating_date: str | None = msgspec.field(default=None, name="RatingDate")
    # the API says `scores`/`geocode`, the bulk open-data files `Scores`/`Geocode`
    scores: _Scores | None = None
    scores_caps: _Scores | None = msgspec.field(default=None, name="Scores")
    geocode: _Geocode | None = None
    geocode_caps: _Geocode | None = msgspec.field(default=None, name="Geocode")


async def fetch(client: httpx.AsyncClient, config: Config, cursor: str | None) -> Page:
    try:
        number = int(cursor) if cursor else 1
    except ValueError:
        number = 0
    if number < 1:
        raise FeedError(f"cursor {cursor!r} is not a page number")
    response = await client.get(
        config.url,
        params={"pageNumber": number, "pageSize": config.page_size},
        headers={"x-api-version": config.api_version, "Accept": "application/json"},
    )
    response.raise_for_status()
    body = response.content
    try:
        meta = msgspec.json.decode(body, type=_Envelope).meta
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        meta = None  # parse will say what is wrong with the body
    total = meta.total_pages if meta is not None else None
    last = total is None or number >= total
    return Page(
        body=body,
        content_type=response.headers.get("content-type"),
        next_cursor=None if last else str(number + 1),
        last=last,
    )


def parse(page: Page, config: Config) -> Parsed:
    try:
        listing = msgspec.json.decode(page.body, type=_Listing)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise FeedError(f"not an establishments list: {exc}") from exc
    records: list[Record] = []
    rejects: list[Reject] = []
    seen: set[str] = set()
    for item in listing.establishments:
        raw = bytes(item)
        try:
            establishment = msgspec.json.decode(raw, type=_Establishment)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            reason = f"unusable establishment: {_short(str(exc))}"
            rejects.append(Reject(raw, reason, _fhrsid_of(raw)))
            continue
        fhrsid = _text(establishment.fhrsid)
        if fhrsid is None:
            rejects.append(Reject(raw, "establishment without FHRSID"))
        elif fhrsid in seen:  # one batch may not upsert one key twice
            rejects.append(Reject(raw, "FHRSID repeated in the page", fhrsid))
        else:
            seen.add(fhrsid)
            _records(establishment, fhrsid, raw, records, rejects)
    return Parsed(records=records, rejects=rejects)


def _records(
    establishment: _Establishment, fhrsid: str, raw: bytes, records: list[Record], rejects: list[Reject]
) -> None:
    geocode = establishment.geocode or establishment.geocode_caps or _Geocode()
    lat, lon = _number(geocode.latitude, 90), _number(geocode.longitude, 180)
    if lat is None or lon is None:
        lat = lon = None
    lines = (establishment.line1, establishment.line2, establishment.line3, establishment.line4)
    address = ", ".join(line for line in (_text(part) for part in lines) if line)
    match = Match(
        business_id=fhrsid,
        name=_text(establishment.name),
        address=address or None,
        postal_code=_text(establishment.postcode),
        lat=lat,
        lon=lon,
        phone=_text(establishment.phone),
    )
    records.append(ShopRecord(external_id=fhrsid, match=match))
    rated_at = _rating_time(establishment.rating_date)
    if isinstance(rated_at, str):
        rejects.append(Reject(raw, rated_at, fhrsid))
        return
    if rated_at is None:  # awaiting inspection, exempt: not rated yet, not an error
        return
    rating = _text(establishment.rating_value)
    records.append(
        InspectionRecord(
            external_id=f"{fhrsid}|{_text(establishment.rating_date)}",
            match=Match(business_id=fhrsid),
            inspected_on=rated_at.date(),
            result=_result(rating),
            score=_score(establishment.scores or establishment.scores_caps),
            score_scale="fhrs_points",  # lower is better: never shown or compared as 0-100
            rating=rating,
            updated_at=rated_at,
        )
    )


class _Id(msgspec.Struct):
    fhrsid: int | str | None = msgspec.field(default=None, name="FHRSID")


def _fhrsid_of(raw: bytes) -> str | None:
    """The FHRSID of an establishment that is unusable otherwise, to name its reject."""
    try:
        return _text(msgspec.json.decode(raw, type=_Id).fhrsid)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None


def _short(text: str) -> str:
    return text if len(text) <= 80 else text[:80] + "..."


def _text(value: int | str | None) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _number(value: float | str | None, limit: float) -> float | None:
    if isinstance(value, str):
        try:
            value = float(value) if value.strip() else None
        except ValueError:
            return None
    if value is None or not math.isfinite(value) or abs(value) > limit:
        return None
    return value


def _score(scores: _Scores | None) -> float | None:
    """Sum of the three score points (lower is better), only when all three are numbers."""
    if scores is None:
        return None
    parts = [_number(value, 1000) for value in (scores.hygiene, scores.structural, scores.management)]
    return None if any(part is None for part in parts) else sum(part or 0.0 for part in parts)


def _rating_time(text: str | None) -> datetime.datetime | str | None:
    """When the rating was given; None when not rated (`0001-01-01T00:00:00` is the API's "never");
    a text when the date cannot be read."""
    if text is None or not text.strip():
        return None
    try:
        moment = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        return f"unreadable RatingDate {_short(text)!r}"
    if moment.year <= 1900:
        return None
    # the API's times carry no zone; they are UK dates at midnight, kept as UTC
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=datetime.UTC)


_Result = Literal["pass", "rectify", "fail"]
_RESULTS: dict[str, _Result] = {
    **dict.fromkeys(("4", "5", "pass", "pass and eat safe"), "pass"),
    **dict.fromkeys(("2", "3", "improvement required"), "rectify"),
    **dict.fromkeys(("0", "1"), "fail"),
}


def _result(rating: str | None) -> _Result | None:
    """4-5 and Pass pass, 2-3 and Improvement Required need rectifying, 0-1 fail; the words for
    not rated yet (Exempt, AwaitingInspection, AwaitingPublication) give no result."""
    return _RESULTS.get(" ".join(rating.lower().split())) if rating else None
