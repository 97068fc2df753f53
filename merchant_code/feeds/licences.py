"""Licence registry: a JSON API read incrementally by `updated_since`.

Wire format (ours to define; the demo's local provider serves it):

    GET {url}?limit=500[&updated_since=2024-05-01T09:30:00+08:00]      (omitted on the first pull)
    200 application/json
    {"items": [{"licence_no": "JY13101060012345",
                "kind": "食品经营许可证",           # or "food_business"; see _KINDS
                "holder_uscc": "91310106MA1FL0XX2K",
                "holder_name": "王记面馆",
                "issued_on": "2021-03-02", "valid_from": "2021-03-02",
                "valid_to": "2026-03-01",           # null, "长期" or 9999-12-31: no end
                "status": "有效",                   # 有效/active 暂停/suspended 吊销/revoked 注销/cancelled
                "updated_at": "2024-05-01T09:30:00+08:00"}],
     "next_updated_since": "2024-05-01T09:30:00+08:00",   # optional; else the max updated_at
     "has_more": false}

Items come ordered by `updated_at`; `updated_since` is inclusive, so the records sitting on the
boundary come again on the next pull and the runner's idempotent upsert absorbs them. A full
page that does not move the cursor (more than `limit` records share one timestamp) would loop
forever: fetch raises FeedError instead, and the fix is a larger `limit`.
Dates are ISO 8601; a timestamp without an offset is Beijing time (+08:00).
"""

from __future__ import annotations

import datetime
import re
from typing import Annotated, Literal

import httpx
import msgspec

from merchant_code.codes import parse_uscc
from merchant_code.errors import InvalidInput
from merchant_code.feeds.base import FeedError, LicenceRecord, Match, Page, Parsed, Reject
from merchant_code.feeds.values import PLACEHOLDERS, BadRecord, clean_text

KIND = "licence_registry"

LicenceKind = Literal[
    "business", "food_business", "pharmacy", "hygiene", "education", "entertainment", "other"
]
Status = Literal["active", "suspended", "revoked", "cancelled"]

_KINDS: dict[str, LicenceKind] = {
    "营业执照": "business",
    "食品经营许可证": "food_business",
    "药品经营许可证": "pharmacy",
    "卫生许可证": "hygiene",
    "公共场所卫生许可证": "hygiene",
    "办学许可证": "education",
    "娱乐经营许可证": "entertainment",
    "其他": "other",
    "business": "business",
    "food_business": "food_business",
    "pharmacy": "pharmacy",
    "hygiene": "hygiene",
    "education": "education",
    "entertainment": "entertainment",
    "other": "other",
}
_STATUSES: dict[str, Status] = {
    "有效": "active",
    "暂停": "suspended",
    "吊销": "revoked",
    "注销": "cancelled",
    "active": "active",
    "suspended": "suspended",
    "revoked": "revoked",
    "cancelled": "cancelled",
}
# registries also write these for "unknown"
_PLACEHOLDERS = PLACEHOLDERS | {"na", "--", "无", "暂无"}
_NO_END = frozenset({"长期", "永久", "长期有效", "9999-12-31"})
_FOOD_NUMBER = re.compile(r"JY\d{14}")
_BEIJING = datetime.timezone(datetime.timedelta(hours=8))
_MAX_TEXT = 200


class Config(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    url: str
    limit: Annotated[int, msgspec.Meta(ge=1, le=5000)] = 500


class _Envelope(msgspec.Struct):
    items: list[msgspec.Raw]
    next_updated_since: str | None = None
    has_more: bool = False


class _Item(msgspec.Struct):
    licence_no: str | None = None
    kind: str | None = None
    holder_uscc: str | None = None
    holder_name: str | None = None
    issued_on: str | None = None
    valid_from: str | None = None
    valid_to: str | None = None
    status: str | None = None
    updated_at: str | None = None


def _text(value: str | None, field: str) -> str | None:
    return clean_text(value, field, limit=_MAX_TEXT, form="NFKC", placeholders=_PLACEHOLDERS)


def _date(value: str | None, field: str) -> datetime.date | None:
    text = _text(value, field)
    if text is None:
        return None
    try:
        day = datetime.date.fromisoformat(text[:10])
    except ValueError:
        raise BadRecord(f"{field} is not a date: {text[:40]!r}") from None
    # 1900-01-01, 0001-01-01, 1970-01-01 are what registries write for "unknown"
    return None if day.year < 1950 or day == datetime.date(1970, 1, 1) else day


def _timestamp(value: str | None) -> datetime.datetime | None:
    text = _text(value, "updated_at")
    if text is None:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise BadRecord(f"updated_at is not an ISO 8601 timestamp: {text[:40]!r}") from None
    if moment.year < 1950:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=_BEIJING)


def _kind(value: str | None, number: str) -> LicenceKind:
    text = _text(value, "kind")
    if text is None:
        return "food_business" if _FOOD_NUMBER.fullmatch(number) else "other"
    return _KINDS.get(text.lower(), "other")


def _licence(item: _Item) -> LicenceRecord:
    raw_number = _text(item.licence_no, "licence_no")
    if raw_number is None:
        raise BadRecord("licence_no is missing")
    number = "".join(raw_number.upper().split())
    kind = _kind(item.kind, number)
    if kind == "food_business" and not _FOOD_NUMBER.fullmatch(number):
        raise BadRecord(f"a food business licence number is JY and 14 digits, not {number!r}")
    status_text = _text(item.status, "status")
    status = _STATUSES.get((status_text or "").lower())
    if status is None:
        raise BadRecord(f"status is missing or unknown: {status_text!r}")
    uscc_text = _text(item.holder_uscc, "holder_uscc")
    try:
        uscc = None if uscc_text is None else parse_uscc(uscc_text, "holder_uscc")
    except InvalidInput as exc:
        raise BadRecord(f"holder_uscc {uscc_text!r}: {exc}") from None
    no_end = (_text(item.valid_to, "valid_to") or "") in _NO_END
    valid_from = _date(item.valid_from, "valid_from")
    valid_to = None if no_end else _date(item.valid_to, "valid_to")
    if valid_from and valid_to and valid_to < valid_from:
        raise BadRecord(f"valid_to {valid_to} is before valid_from {valid_from}")
    return LicenceRecord(
        external_id=number,
        match=Match(uscc=uscc, licence_number=number, name=_text(item.holder_name, "holder_name")),
        number=number,
        kind=kind,
        holder_uscc=uscc,
        issued_on=_date(item.issued_on, "issued_on"),
        valid_from=valid_from,
        valid_to=valid_to,
        status=status,
        updated_at=_timestamp(item.updated_at),
    )


def _envelope(body: bytes) -> _Envelope:
    try:
        return msgspec.json.decode(body, type=_Envelope)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise FeedError(f"not a licence registry page: {str(exc)[:200]}") from None


def _one(raw: msgspec.Raw) -> LicenceRecord | Reject:
    data = bytes(raw)
    try:
        item = msgspec.json.decode(data, type=_Item)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        return Reject(raw=data, reason=f"not a licence item: {str(exc)[:200]}")
    try:
        return _licence(item)
    except BadRecord as exc:
        number = item.licence_no if isinstance(item.licence_no, str) and len(item.licence_no) <= 64 else None
        return Reject(raw=data, reason=str(exc), external_id=number and "".join(number.upper().split()))


def parse(page: Page, config: Config) -> Parsed:
    results = [_one(raw) for raw in _envelope(page.body).items]
    return Parsed(
        records=[r for r in results if isinstance(r, LicenceRecord)],
        rejects=[r for r in results if isinstance(r, Reject)],
    )


def _moment(text: str | None) -> datetime.datetime | None:
    try:
        return _timestamp(text)
    except BadRecord:
        return None


def _position(body: bytes, cursor: str | None) -> tuple[str | None, bool]:
    """The cursor after this page and whether it is the last; an unreadable body keeps the
    cursor (parse then raises FeedError saying why)."""
    try:
        envelope = _envelope(body)
    except FeedError:
        return cursor, True
    seen = _moment(envelope.next_updated_since)
    if seen is None:
        results = [_one(raw) for raw in envelope.items]
        stamps = [r.updated_at for r in results if isinstance(r, LicenceRecord) and r.updated_at]
        seen = max(stamps, default=None)
    before = _moment(cursor)
    if seen is None or (before is not None and seen <= before):
        if envelope.has_more:
            raise FeedError(f"a full page did not move the cursor past {cursor}: raise the limit")
        return cursor, True
    return seen.isoformat(), not envelope.has_more


async def fetch(client: httpx.AsyncClient, config: Config, cursor: str | None) -> Page:
    params: dict[str, str | int] = {"limit": config.limit}
    if cursor is not None:
        params["updated_since"] = cursor
    response = await client.get(config.url, params=params, headers={"Accept": "application/json"})
    response.raise_for_status()
    body = response.content
    next_cursor, last = _position(body, cursor)
    return Page(
        body=body, content_type=response.headers.get("content-type"), next_cursor=next_cursor, last=last
    )
