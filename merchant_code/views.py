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
