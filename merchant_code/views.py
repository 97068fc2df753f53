"""What each audience may see of a shop. Masking is structural: the citizen struct has no field
that could carry an owner's or a staff member's personal data, so none can leak through it.

The structs mirror the documents that sql/queries/profiles.sql builds into `shop_profile` and
get_full_profile composes: `citizen_doc` -> CitizenRecord, `merchant_doc` (the citizen's with
`private_doc` over it) -> MerchantShop, `full_doc` (that and the risk) -> InspectorShop. Notices
are not in any document: each view joins them when it is made (notices.py).
"""

from __future__ import annotations

import datetime
from typing import Any, Literal

import msgspec

LicenceState = Literal["valid", "expiring", "expired", "pending", "rejected", "invalid"]
CertState = Literal["valid", "expiring", "expired", "pending", "rejected"]
Grade = Literal["A", "B", "C"]
Status = Literal["active", "suspended", "closed"]


class Struct(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    pass


class Licence(Struct, frozen=True):
    kind: str
    state: LicenceState
    valid_to: datetime.date | None


class Violation(Struct, frozen=True):
    code: str
    description: str
    description_en: str | None
    critical: bool | None  # None: the feed does not say (never "not critical")
    corrected: bool


class Inspection(Struct, frozen=True):
    id: str
    inspected_on: datetime.date
    kind: str
    result: Literal["pass", "rectify", "fail"] | None  # None: the feed does not state one
    grade: Grade | None
    rectify_due: datetime.date | None
    merchant_reply: str | None
    violations: list[Violation]


class Review(Struct, frozen=True):
    rating: int
    body: str | None
    author: str | None
    posted_at: datetime.datetime


class SentimentItem(Struct, frozen=True):
    title: str
    url: str | None
    published_at: datetime.datetime | None
    tone: Literal["positive", "neutral", "negative"] | None


class Honour(Struct, frozen=True):
    title: str
    issuer: str
    awarded_on: datetime.date
    valid_to: datetime.date | None


class Notice(Struct, frozen=True):
    id: str
    title: str
    kind: str
    sent_at: datetime.datetime | None


class ShopBasics(Struct, frozen=True):
    code: str
    name: str
    name_en: str | None
    trade: str
    trade_name: str
    trade_name_en: str
    graded: bool  # food trades are graded A/B/C
    area_name: str
    address: str
    lat: float | None
    lon: float | None
    phone: str | None  # the shop's public phone, never the owner's
    opening_hours: str | None
    status: Status
    status_since: datetime.datetime
    revoked: bool  # the sticker (code) has been revoked
    grade: Grade | None
    grade_date: datetime.date | None
    rating: float | None
    review_count: int
    reviews: list[Review]
    sentiment: list[SentimentItem]
    honours: list[Honour]
    open_cases: int
    staff_count: int
    staff_certified: int
    freshness: dict[str, datetime.datetime]


class CitizenRecord(ShopBasics, frozen=True):
    """What the profile keeps for anyone who scans the sticker (the stored answers are made of it)."""

    licences: list[Licence]
    inspections: list[Inspection]


class CitizenShop(CitizenRecord, frozen=True):
    """Anyone who scans the sticker: the record, and the newest notices sent to the shop's whole
    trade and area, joined when the view is made (notices.py), never stored in the profile."""

    notices: list[Notice] = []


class FullLicence(Struct, frozen=True):
    kind: str
    state: LicenceState
    number: str
    issuing_body: str | None
    valid_from: datetime.date | None
    valid_to: datetime.date | None


class Submission(Struct, frozen=True):
    """A licence the merchant sent in, awaiting (or refused) verification."""

    id: str
    kind: str
    number: str
    issuing_body: str | None
    valid_from: datetime.date | None
    valid_to: datetime.date | None
    state: LicenceState
    review_note: str | None
    has_image: bool


class HonourSubmission(Struct, frozen=True):
    id: str
    title: str
    issuer: str
    awarded_on: datetime.date
    state: Literal["pending", "rejected"]
    review_note: str | None


class FullInspection(Inspection, frozen=True):
    score: float | None
    # what the score means: lives_0_100 (higher is better), fhrs_points or demerit_points (lower
    # is better); None with no score. Rows rebuilt before the scale existed have none: 0-100
    score_scale: Literal["lives_0_100", "fhrs_points", "demerit_points"] | None = None
    summary: str | None = None


class StaffMember(Struct, frozen=True):
    id: str
    name: str
    role: str | None
    phone: str | None
    id_number: str | None
    health_cert_number: str | None
    health_cert_valid_to: datetime.date | None
    cert_state: CertState


class CaseItem(Struct, frozen=True):
    id: str
    category: str
    source: str
    status: str
    opened_at: datetime.datetime
    overdue: bool


class InboxNotice(Notice, frozen=True):
    read: bool


class MerchantShop(ShopBasics, frozen=True):
    """The owner, about their own shop: their own personal data, unmasked."""

    uscc: str
    area_code: str
    owner_name: str | None
    owner_phone: str | None
    owner_id_number: str | None
    licences: list[FullLicence]
    submissions: list[Submission]
    honour_submissions: list[HonourSubmission]
    inspections: list[FullInspection]
    staff: list[StaffMember]
    cases: list[CaseItem]
    notices: list[InboxNotice]


class RiskReason(Struct, frozen=True):
    code: str
    points: int
    detail: dict[str, Any] = {}


class InspectorShop(MerchantShop, frozen=True):
    """Inspectors and managers whose area covers the shop. Personal data is masked unless the
    account holds `pii:read`; `pii_masked` says which."""

    risk_score: int
    risk_reasons: list[RiskReason]
    pii_masked: bool = True


class ShopListItem(Struct, frozen=True):
    code: str
    name: str
    trade: str
    area_code: str
    address: str
    status: Status


class Page(Struct, frozen=True):
    """A page of a list; pass `next` back as `after` for the following one."""

    items: list[ShopListItem]
    next: str | None


def risk_reasons(raw: list[dict[str, Any]]) -> list[RiskReason]:
    """The profile stores each reason flat ({code, points, ...}); the view nests the rest."""
    return [
        RiskReason(
            code=r["code"],
            points=r["points"],
            detail={k: v for k, v in r.items() if k not in ("code", "points")},
        )
        for r in raw
    ]
