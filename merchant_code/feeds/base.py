"""The small protocol every feed module speaks, and the records they hand to the runner.

A feed module (`lives.py`, `fhrs.py`, `licences.py`, `reviews.py`, `rss.py`) provides:

    KIND: str                                   # the `feed_source.kind` it serves
    Config: type[msgspec.Struct]                # its part of `feed_source.config` (JSON)
    async def fetch(client, config, cursor) -> Page
        # HTTP only: one page of the source after `cursor` (None: from the start)
    def parse(page: Page, config) -> Parsed
        # pure: bytes in, typed records and rejects out; never raises for bad data

`parse` must turn every placeholder (dates like 1900-01-01, "NULL"/"None" strings, scores that
cannot be) into a typed unknown (None) or a Reject: never into data. Anything it cannot use is a
Reject carrying the raw bytes of that record and the reason, so nothing is silently dropped.
The runner matches records to shops (`Match`), upserts them keyed on (source, external_id) without
moving a record backwards in time, stores the cursor in the same transaction, quarantines the
rejects and counts: fetched = inserted + updated + unchanged + quarantined.
"""

from __future__ import annotations

import datetime
import hashlib
from typing import Literal

import msgspec


class FeedError(Exception):
    """A page that cannot be read at all (not the format, truncated archive): the run stops and
    records why; single bad records are Rejects instead."""


class Page(msgspec.Struct, frozen=True):
    body: bytes
    content_type: str | None = None
    # what the runner stores as the source's position once this page's rows are committed
    next_cursor: str | None = None
    # False when the source says there is more after this page
    last: bool = True


class Match(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a record says about which shop it is about; the runner tries them in this order:
    the source's own business id (through `feed_shop_map`), USCC, licence number, then (for
    sentiment) name and address, keeping the confidence."""

    business_id: str | None = None
    uscc: str | None = None
    licence_number: str | None = None
    name: str | None = None
    address: str | None = None
    postal_code: str | None = None
    lat: float | None = None
    lon: float | None = None
    phone: str | None = None


class Violation(msgspec.Struct, frozen=True):
    code: str | None  # None for a feed's "no violation" markers, which parse drops instead
    description: str
    critical: bool | None = None


# what a score means: LIVES 0-100 (higher is better), FHRS score points and demerit points (both
# lower is better); scores on different scales are never compared
ScoreScale = Literal["lives_0_100", "fhrs_points", "demerit_points"]


class InspectionRecord(msgspec.Struct, frozen=True, kw_only=True):
    external_id: str
    match: Match
    inspected_on: datetime.date
    # None: the publisher does not say (LIVES' multi-file form has no result column)
    result: Literal["pass", "rectify", "fail"] | None = None
    score: float | None = None
    score_scale: ScoreScale | None = None
    grade: Literal["A", "B", "C"] | None = None
    # the source's own rating as given (FHRS: "0".."5", "Exempt", "AwaitingInspection", ...)
    rating: str | None = None
    kind: Literal["routine", "follow_up", "complaint", "special", "licensing"] | None = None
    description: str | None = None
    violations: tuple[Violation, ...] = ()
    # when the source last changed it; an older version never overwrites a newer one
    updated_at: datetime.datetime | None = None
    # what the publisher keeps stable when its ids are row counters (see content_key below)
    content_key: str | None = None


CONTENT_ID_PREFIX = "ck:"


def content_key(
    business_id: str, day: datetime.date, kind: str | None, score: float | None, codes: list[str]
) -> str:
    """The identity of a visit when the publisher's id cannot be trusted: business, date, type,
    score and the sorted violation codes, hashed (fields joined by a unit separator, which no
    CSV value carries)."""
    text = "\x1f".join(
        (business_id, day.isoformat(), kind or "", "" if score is None else repr(score), *sorted(codes))
    )
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def by_content(records: list[InspectionRecord]) -> list[InspectionRecord]:
    """The records keyed by content: `ck:KEY|n`, n numbering visits with the same key (identical
    on everything the key covers), ordered by the rest of their content so that the rows' order
    in the file never decides which is which."""
    same: dict[str, list[InspectionRecord]] = {}
    for record in records:
        if record.content_key is not None:
            same.setdefault(record.content_key, []).append(record)
    renamed: dict[int, InspectionRecord] = {}
    for key, group in same.items():
        if len(group) > 1:
            group.sort(key=_rest_of_content)
        for n, record in enumerate(group, 1):
            external_id = f"{CONTENT_ID_PREFIX}{key}|{n}"
            renamed[id(record)] = msgspec.structs.replace(record, external_id=external_id)
    return [renamed.get(id(r), r) for r in records]


def _rest_of_content(record: InspectionRecord) -> tuple[str, str, str, tuple[tuple[str, str, int], ...]]:
    return (
        record.result or "",
        record.description or "",
        record.kind or "",
        tuple(
            (v.code or "", v.description, -1 if v.critical is None else int(v.critical))
            for v in record.violations
        ),
    )


class LicenceRecord(msgspec.Struct, frozen=True, kw_only=True):
    external_id: str
    match: Match
    number: str
    kind: Literal["business", "food_business", "pharmacy", "hygiene", "education", "entertainment", "other"]
    holder_uscc: str | None = None
    issued_on: datetime.date | None = None
    valid_from: datetime.date | None = None
    valid_to: datetime.date | None = None
    status: Literal["active", "suspended", "revoked", "cancelled"] = "active"
    updated_at: datetime.datetime | None = None


class ReviewRecord(msgspec.Struct, frozen=True, kw_only=True):
    external_id: str
    match: Match
    rating: int | None  # 1..5; None only for a deletion that no longer carries it (a tombstone)
    body: str | None = None
    author: str | None = None
    posted_at: datetime.datetime
    edited_at: datetime.datetime | None = None
    deleted: bool = False
    updated_at: datetime.datetime | None = None


class SentimentRecord(msgspec.Struct, frozen=True, kw_only=True):
    external_id: str  # the item's guid/id, or its link when it has none
    match: Match  # name and address candidates found in the text
    title: str
    url: str | None = None
    summary: str | None = None
    published_at: datetime.datetime | None = None
    tone: Literal["positive", "neutral", "negative"] | None = None


class ShopRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A business as the source describes it (LIVES businesses.csv, FHRS establishment): used to
    learn the mapping from the source's business id to a shop."""

    external_id: str
    match: Match


Record = InspectionRecord | LicenceRecord | ReviewRecord | SentimentRecord | ShopRecord


class Reject(msgspec.Struct, frozen=True):
    raw: bytes  # the record exactly as it came (a CSV line, a JSON object, an XML element)
    reason: str
    external_id: str | None = None


class Parsed(msgspec.Struct, frozen=True):
    records: list[Record]
    rejects: list[Reject]
