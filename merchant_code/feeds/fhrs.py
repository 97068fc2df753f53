"""FHRS establishments (UK Food Standards Agency): the API v2 and the bulk open-data files.

Three shapes are read, the body deciding which: the API's `{"establishments": [...], "meta"}`;
a bulk JSON file `{"FHRSEstablishment": {"Header", "EstablishmentCollection"}}` whose collection
is `{"EstablishmentDetail": [...]}` (or one object, as XML-to-JSON converters write a single
child) or, in newer files, the list itself; and the bulk XML file, the same tree as elements.
Field names are matched without regard to case: the API writes `scores`/`geocode` with
`longitude`, the bulk files `Scores`/`Geocode` with `Longitude`.

Each establishment is a ShopRecord, and an InspectionRecord `FHRSID|RatingDate` when it has been
rated. The shop is matched on every identifier the format carries: FHRSID (the source's mapping),
then LocalAuthorityBusinessID, where an authority keeps its own id for the business (a regulator
puts the USCC or the licence number there), then name and address. The API offers no "changed
since": every run walks all pages from the first, so the last page hands back no cursor and the
next run starts over; a bulk file is one page.
"""

from __future__ import annotations

import datetime
import math
import xml.etree.ElementTree as ET
import xml.parsers.expat as expat
from typing import Annotated, Any, Literal

import httpx
import msgspec

from merchant_code.codes import parse_uscc
from merchant_code.errors import InvalidInput
from merchant_code.feeds import safe_xml
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


class _Geocode(msgspec.Struct):
    longitude: float | str | None = msgspec.field(default=None, name="Longitude")
    latitude: float | str | None = msgspec.field(default=None, name="Latitude")


class _Scores(msgspec.Struct):
    hygiene: float | str | None = msgspec.field(default=None, name="Hygiene")
    structural: float | str | None = msgspec.field(default=None, name="Structural")
    management: float | str | None = msgspec.field(default=None, name="ConfidenceInManagement")


class _Establishment(msgspec.Struct):
    fhrsid: int | str | None = msgspec.field(default=None, name="FHRSID")
    authority_id: int | str | None = msgspec.field(default=None, name="LocalAuthorityBusinessID")
    name: str | None = msgspec.field(default=None, name="BusinessName")
    line1: str | None = msgspec.field(default=None, name="AddressLine1")
    line2: str | None = msgspec.field(default=None, name="AddressLine2")
    line3: str | None = msgspec.field(default=None, name="AddressLine3")
    line4: str | None = msgspec.field(default=None, name="AddressLine4")
    postcode: str | None = msgspec.field(default=None, name="PostCode")
    phone: str | None = msgspec.field(default=None, name="Phone")
    rating_value: int | str | None = msgspec.field(default=None, name="RatingValue")
    # a bulk JSON file converted from XML may write a nil date as {"@xsi:nil": "true"}
    rating_date: str | dict[str, Any] | None = msgspec.field(default=None, name="RatingDate")
    # an empty element (`<Scores/>`, `<Geocode />`) arrives as "" or null: unknown, not an error
    scores: _Scores | str | None = msgspec.field(default=None, name="Scores")
    geocode: _Geocode | str | None = msgspec.field(default=None, name="Geocode")


def _canonical_names(*types: type[msgspec.Struct]) -> dict[str, str]:
    names: dict[str, str] = {}
    for kind in types:
        for f in msgspec.structs.fields(kind):
            names[f.encode_name.lower()] = f.encode_name
    return names


_NAMES = _canonical_names(_Establishment, _Scores, _Geocode)


def _canonical(value: Any) -> Any:
    """Keys spelt as the structs spell them whatever their case (`geocode` -> `Geocode`)."""
    if isinstance(value, dict):
        return {_NAMES.get(str(k).lower(), k): _canonical(v) for k, v in value.items()}
    return value


class _Listing(msgspec.Struct):
    # kept raw so that a bad establishment is quarantined exactly as it came
    establishments: list[msgspec.Raw] | None = None
    # (an empty Raw when absent: msgspec reads `Raw | None` as null only)
    bulk: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw, name="FHRSEstablishment")


class _Bulk(msgspec.Struct):
    collection: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw, name="EstablishmentCollection")


class _Collection(msgspec.Struct):
    detail: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw, name="EstablishmentDetail")


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
    items = _xml_items(page.body) if _is_xml(page.body) else _json_items(page.body)
    records: list[Record] = []
    rejects: list[Reject] = []
    seen: set[str] = set()
    for raw, fields in items:
        if isinstance(fields, _Unreadable):
            rejects.append(Reject(raw, f"unusable establishment: {_short(fields)}"))
            continue
        try:
            establishment = msgspec.convert(_canonical(fields), _Establishment)
        except msgspec.ValidationError as exc:
            reason = f"unusable establishment: {_short(str(exc))}"
            rejects.append(Reject(raw, reason, _fhrsid_of(fields)))
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


_DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)


def _json_items(body: bytes) -> list[tuple[bytes, Any]]:
    """Each establishment's raw bytes and its decoded fields (None when it cannot be decoded),
    from the API's list or a bulk JSON file."""
    try:
        listing = msgspec.json.decode(body, type=_Listing)
        raws = listing.establishments if listing.establishments is not None else _bulk_json(listing.bulk)
    except _DECODE_ERRORS as exc:
        raise FeedError(f"not an establishments list: {exc}") from exc
    items: list[tuple[bytes, Any]] = []
    for item in raws:
        raw = bytes(item)
        try:
            items.append((raw, msgspec.json.decode(raw)))
        except _DECODE_ERRORS as exc:
            items.append((raw, _Unreadable(str(exc))))
    return items


def _bulk_json(bulk: msgspec.Raw) -> list[msgspec.Raw]:
    if not bulk:
        raise FeedError("not an establishments list: neither `establishments` nor `FHRSEstablishment`")
    collection = msgspec.json.decode(bulk, type=_Bulk).collection
    return _one_or_many(collection, lambda raw: msgspec.json.decode(raw, type=_Collection).detail)


def _one_or_many(raw: msgspec.Raw, inner: Any) -> list[msgspec.Raw]:
    """A list as it is, one object as a list of one (XML-to-JSON converters write a single child
    so), absent, null or "" as none; an object that is a wrapper is opened with `inner`."""
    text = bytes(raw).lstrip() or b"null"
    if text.startswith(b"["):
        return msgspec.json.decode(text, type=list[msgspec.Raw])
    if text.startswith(b"{") and inner is not None:
        return _one_or_many(inner(raw), None)
    if text.startswith(b"{"):
        return [msgspec.Raw(text)]
    if text in (b"null", b'""'):
        return []
    raise FeedError("not an establishments list: the collection is neither a list nor an object")


_MAX_DEPTH = 16  # FHRSEstablishment > EstablishmentCollection > EstablishmentDetail > Scores > ...


def _is_xml(body: bytes) -> bool:
    return body.removeprefix(b"\xef\xbb\xbf").lstrip()[:1] == b"<"


def _xml_items(body: bytes) -> list[tuple[bytes, Any]]:
    """Each EstablishmentDetail of a bulk XML file: its bytes as they came and its fields as a
    dict (an element with children a dict, one without its text; `xsi:nil` or empty is None).
    DOCTYPE and ENTITY declarations are refused before anything is expanded (XXE, billion laughs)."""
    parser = safe_xml.parser()
    builder = ET.TreeBuilder()
    starts: list[int] = []
    found: list[tuple[ET.Element, int, int]] = []

    def start(name: str, attrs: dict[str, str]) -> None:
        if len(starts) >= _MAX_DEPTH:
            raise FeedError(f"elements nested deeper than {_MAX_DEPTH}")
        starts.append(parser.CurrentByteIndex)
        builder.start(name, attrs)

    def end(name: str) -> None:
        at = parser.CurrentByteIndex
        # an end tag's index is where `</` starts; an empty element's is just past `/>`
        stop = body.find(b">", at) + 1 if body.startswith(b"</", at) else at
        element = builder.end(name)
        begin = starts.pop()
        if name.lower() == "establishmentdetail":
            found.append((element, begin, stop))

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(body, True)
    except (expat.ExpatError, LookupError, UnicodeError, ValueError) as exc:
        raise FeedError(f"not an establishments list: not well-formed XML: {_short(str(exc))}") from None
    root = builder.close()
    if root.tag.lower() != "fhrsestablishment":
        raise FeedError(f"not an establishments list: an XML document of <{_short(root.tag)}>")
    return [(body[begin:stop], _fields(element)) for element, begin, stop in found]


def _fields(element: ET.Element) -> Any:
    if len(element):
        return {child.tag: _fields(child) for child in element}
    return (element.text or "").strip() or None


class _Unreadable(str):
    """An establishment whose bytes are not JSON: its reason, for the reject."""


def _records(
    establishment: _Establishment, fhrsid: str, raw: bytes, records: list[Record], rejects: list[Reject]
) -> None:
    geocode = establishment.geocode if isinstance(establishment.geocode, _Geocode) else _Geocode()
    lat, lon = _number(geocode.latitude, 90), _number(geocode.longitude, 180)
    if lat is None or lon is None:
        lat = lon = None
    lines = (establishment.line1, establishment.line2, establishment.line3, establishment.line4)
    address = ", ".join(line for line in (_text(part) for part in lines) if line)
    uscc, licence_number = _authority_id(_text(establishment.authority_id))
    match = Match(
        business_id=fhrsid,
        uscc=uscc,
        licence_number=licence_number,
        name=_text(establishment.name),
        address=address or None,
        postal_code=_text(establishment.postcode),
        lat=lat,
        lon=lon,
        phone=_text(establishment.phone),
    )
    records.append(ShopRecord(external_id=fhrsid, match=match))
    rated_at = _rating_time(establishment.rating_date if isinstance(establishment.rating_date, str) else None)
    if isinstance(rated_at, str):
        rejects.append(Reject(raw, rated_at, fhrsid))
        return
    if rated_at is None:  # awaiting inspection, exempt: not rated yet, not an error
        return
    rating = _text(establishment.rating_value)
    records.append(
        InspectionRecord(
            # the API's form of the date whatever the shape (the bulk files write `2019-05-10`), so
            # one rating keeps its id when a source moves from the API to the files
            external_id=f"{fhrsid}|{rated_at.strftime('%Y-%m-%dT%H:%M:%S')}",
            match=Match(business_id=fhrsid),
            inspected_on=rated_at.date(),
            result=_result(rating),
            score=_score(establishment.scores if isinstance(establishment.scores, _Scores) else None),
            score_scale="fhrs_points",  # lower is better: never shown or compared as 0-100
            rating=rating,
            updated_at=rated_at,
        )
    )


def _authority_id(value: str | None) -> tuple[str | None, str | None]:
    """LocalAuthorityBusinessID as (USCC, licence number): a valid USCC is one; anything else is
    tried as the number of a licence in the register (which finds nothing for an authority's
    own reference such as `PI/000012345`)."""
    if value is None:
        return None, None
    if len(value) == 18:
        try:
            return parse_uscc(value), None
        except InvalidInput:
            pass
    return None, value


def _fhrsid_of(fields: Any) -> str | None:
    """The FHRSID of an establishment that is unusable otherwise, to name its reject."""
    if not isinstance(fields, dict):
        return None
    found = _canonical(fields).get("FHRSID")
    return _text(found) if isinstance(found, int | str) else None


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
