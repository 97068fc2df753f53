"""Review platform: a JSON API with opaque cursor pagination, edits and deletions.

Wire format (ours to define; the demo's local provider serves it):

    GET {url}?limit=100[&cursor=<opaque>]                       (no cursor on the first pull)
    200 application/json
    {"data": [{"id": "r-1001",                 # string or integer
               "business_ref": "7KQ2M9XW4D1HB",  # the shop as the platform knows it (code, USCC, own id)
               "rating": 4,                    # 1..5, an integer or a string of one ("4")
               "text": "面很筋道", "author": "小李",
               "created_at": "2024-05-01T12:00:00+08:00",
               "updated_at": "2024-05-02T08:00:00+08:00",   # after created_at: the review was edited
               "deleted": false}],             # true: a tombstone, text and author may be absent
     "next_cursor": "eyJwIjo0fQ"}              # null: nothing more for now

The platform orders the stream by (updated_at, id), so an edit or a deletion comes again as a
new entry. At the end `next_cursor` is null: fetch keeps the cursor it was given, so the next
pull re-reads the last page (the runner's upsert absorbs repeats) and then sees what is new.
A timestamp without an offset is Beijing time (+08:00).
"""

from __future__ import annotations

import datetime
from typing import Annotated

import httpx
import msgspec

from merchant_code.feeds.base import FeedError, Match, Page, Parsed, Reject, ReviewRecord
from merchant_code.feeds.values import BadRecord, clean_text

KIND = "review_platform"

_BEIJING = datetime.timezone(datetime.timedelta(hours=8))
_LIMITS = {"id": 128, "business_ref": 64, "author": 100, "text": 10_000, "created_at": 40, "updated_at": 40}


class Config(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    url: str
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100


class _Envelope(msgspec.Struct):
    data: list[msgspec.Raw]
    next_cursor: str | None = None


class _Item(msgspec.Struct):
    id: str | int | None = None
    business_ref: str | None = None
    rating: int | float | str | None = None
    text: str | None = None
    author: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    deleted: bool | None = None


def _text(value: str | None, field: str) -> str | None:
    return clean_text(value, field, limit=_LIMITS[field])


def _timestamp(value: str | None, field: str) -> datetime.datetime | None:
    text = _text(value, field)
    if text is None:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise BadRecord(f"{field} is not an ISO 8601 timestamp: {text!r}") from None
    if moment.year < 2000:  # 1900-01-01, 0001-01-01, the epoch: "unknown", not a review date
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=_BEIJING)


def _rating(value: int | float | str | None) -> int:
    number: float | None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    else:
        number = None if value is None else float(value)
    if number is None or number != number or not number.is_integer() or not 1 <= number <= 5:
        raise BadRecord(f"rating must be an integer from 1 to 5, not {str(value)[:20]!r}")
    return int(number)


def _review(item: _Item) -> ReviewRecord:
    external_id = _text(None if item.id is None else str(item.id), "id")
    if external_id is None:
        raise BadRecord("id is missing")
    business_ref = _text(item.business_ref, "business_ref")
    if business_ref is None:
        raise BadRecord("business_ref is missing: the review cannot be matched to a shop")
    posted_at = _timestamp(item.created_at, "created_at")
    if posted_at is None:
        raise BadRecord("created_at is missing or a placeholder")
    updated_at = _timestamp(item.updated_at, "updated_at")
    tombstone = bool(item.deleted) and item.rating is None  # the platform says only "gone"
    return ReviewRecord(
        external_id=external_id,
        match=Match(business_id=business_ref),
        rating=None if tombstone else _rating(item.rating),
        body=_text(item.text, "text"),
        author=_text(item.author, "author"),
        posted_at=posted_at,
        edited_at=updated_at if updated_at is not None and updated_at > posted_at else None,
        deleted=bool(item.deleted),
        updated_at=updated_at,
    )


def _one(raw: msgspec.Raw) -> ReviewRecord | Reject:
    data = bytes(raw)
    try:
        item = msgspec.json.decode(data, type=_Item)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        return Reject(raw=data, reason=f"not a review: {str(exc)[:200]}")
    try:
        return _review(item)
    except BadRecord as exc:
        ident = None if item.id is None else str(item.id)
        return Reject(raw=data, reason=str(exc), external_id=ident if ident and len(ident) <= 128 else None)


def _envelope(body: bytes) -> _Envelope:
    try:
        return msgspec.json.decode(body, type=_Envelope)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise FeedError(f"not a review platform page: {str(exc)[:200]}") from None


def parse(page: Page, config: Config) -> Parsed:
    results = [_one(raw) for raw in _envelope(page.body).data]
    return Parsed(
        records=[r for r in results if isinstance(r, ReviewRecord)],
        rejects=[r for r in results if isinstance(r, Reject)],
    )


async def fetch(client: httpx.AsyncClient, config: Config, cursor: str | None) -> Page:
    params: dict[str, str | int] = {"limit": config.limit}
    if cursor is not None:
        params["cursor"] = cursor
    response = await client.get(config.url, params=params, headers={"Accept": "application/json"})
    response.raise_for_status()
    try:
        following = _envelope(response.content).next_cursor
    except FeedError:
        following = None  # parse raises FeedError saying why; the cursor stays where it was
    return Page(
        body=response.content,
        content_type=response.headers.get("content-type"),
        next_cursor=following or cursor,
        last=not following,
    )
