"""What each audience may see of a shop. Masking is structural: a citizen struct has no field
that could carry an owner's or a staff member's personal data.
"""

from __future__ import annotations

import datetime
from typing import Literal

import msgspec

LicenceState = Literal["valid", "expiring", "expired", "pending", "invalid"]


class CitizenLicence(msgspec.Struct, frozen=True):
    kind: str
    state: LicenceState
    valid_to: datetime.date | None


class CitizenShop(msgspec.Struct, frozen=True):
    code: str
    name: str
    name_en: str | None
    trade: str
    trade_name: str
    trade_name_en: str
    area_name: str
    address: str
    status: Literal["active", "suspended", "closed"]
    opening_hours: str | None
    phone: str | None
    licences: list[CitizenLicence]
    last_inspected_on: datetime.date | None
    last_result: str | None
    grade: Literal["A", "B", "C"] | None
    rating: float | None
    review_count: int


class Licence(msgspec.Struct, frozen=True):
    kind: str
    number: str | None
    state: LicenceState
    valid_from: datetime.date | None
    valid_to: datetime.date | None


class StaffMember(msgspec.Struct, frozen=True):
    name: str
    role: str | None
    phone: str | None
    id_number: str | None
    health_cert_number: str | None
    health_cert_valid_to: datetime.date | None


class InspectionSummary(msgspec.Struct, frozen=True):
    inspected_on: datetime.date
    kind: str | None
    result: str
    grade: Literal["A", "B", "C"] | None
    violations: int


class MerchantShop(msgspec.Struct, frozen=True):
    """What the owner sees of their own shop: their own personal data, unmasked."""

    code: str
    uscc: str
    name: str
    name_en: str | None
    trade: str
    trade_name: str
    area_name: str
    address: str
    status: Literal["active", "suspended", "closed"]
    opening_hours: str | None
    phone: str | None
    owner_name: str | None
    owner_phone: str | None
    owner_id_number: str | None
    licences: list[Licence]
    staff: list[StaffMember]
    inspections: list[InspectionSummary]


class InspectorShop(msgspec.Struct, frozen=True):
    """What an inspector or manager whose area covers the shop sees. Personal data is masked
    unless the account holds `pii:read`; `pii_masked` says which."""

    code: str
    uscc: str
    name: str
    name_en: str | None
    trade: str
    trade_name: str
    area_code: str
    area_name: str
    address: str
    lat: float | None
    lon: float | None
    status: Literal["active", "suspended", "closed"]
    opening_hours: str | None
    phone: str | None
    owner_name: str | None
    owner_phone: str | None
    owner_id_number: str | None
    licences: list[Licence]
    staff: list[StaffMember]
    inspections: list[InspectionSummary]
    pii_masked: bool


class ShopListItem(msgspec.Struct, frozen=True):
    code: str
    name: str
    trade: str
    area_code: str
    address: str
    status: Literal["active", "suspended", "closed"]


class Page(msgspec.Struct, frozen=True):
    """A page of a list; pass `next` back as `after` for the following one."""

    items: list[ShopListItem]
    next: str | None
