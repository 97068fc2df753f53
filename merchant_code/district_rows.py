"""Row generators for the synthetic district: plain tuples in COPY column order.

One `random.Random(seed)` drives everything and the calls happen in a fixed order, so the same
seed gives the same rows. Dates come from `today`, never from the clock.
"""

from __future__ import annotations

import datetime
import random
from collections.abc import Sequence
from typing import Any

from merchant_code.codes import USCC_ALPHABET, new_shop_code, uscc_check_char
from merchant_code.district_words import (
    GIVEN_CHARS,
    HONOURS,
    INSPECTION_SUMMARIES,
    REVIEW_BODIES,
    ROADS,
    SHOP_PREFIXES,
    STAFF_ROLES,
    SURNAMES,
    TRADE_LICENCES,
    TRADES,
    VIOLATIONS,
)

Row = tuple[Any, ...]
SHOP_COLUMNS = [
    "code",
    "uscc",
    "name",
    "name_en",
    "trade",
    "area_id",
    "address",
    "lat",
    "lon",
    "phone",
    "opening_hours",
    "status",
    "status_changed_at",
    "owner_name",
    "owner_phone",
    "owner_id_number",
    "created_at",
    "updated_at",
]
LICENCE_COLUMNS = [
    "shop_id",
    "source",
    "external_id",
    "kind",
    "number",
    "holder_uscc",
    "issued_on",
    "valid_from",
    "valid_to",
    "status",
    "fetched_at",
    "updated_at",
]
INSPECTION_COLUMNS = [
    "shop_id",
    "source",
    "external_id",
    "inspected_on",
    "kind",
    "score",
    "result",
    "grade",
    "rectify_due",
    "summary",
    "fetched_at",
    "created_at",
]
VIOLATION_COLUMNS = ["inspection_id", "code", "description", "critical", "corrected"]
REVIEW_COLUMNS = [
    "shop_id",
    "source",
    "external_id",
    "rating",
    "body",
    "author_alias",
    "posted_at",
    "fetched_at",
]
STAFF_COLUMNS = [
    "shop_id",
    "source",
    "external_id",
    "name",
    "id_number",
    "phone",
    "role",
    "health_cert_number",
    "health_cert_valid_to",
    "active",
    "fetched_at",
]
HONOUR_COLUMNS = [
    "shop_id",
    "source",
    "external_id",
    "title",
    "issuer",
    "awarded_on",
    "verified",
    "fetched_at",
]

_TRADE_NAMES = list(TRADES)
_TRADE_WEIGHTS = [TRADES[t][0] for t in _TRADE_NAMES]
_FOOD = {"catering", "food_retail"}
_REVIEWED = {"catering", "food_retail", "hair_beauty", "hotel", "entertainment"}
_ID_WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]


class Gen:
    """The generator's state: one random stream, the day, and the codes already handed out."""

    def __init__(self, seed: int, today: datetime.date) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.today = today
        self.now = datetime.datetime.combine(today, datetime.time(8), datetime.UTC)
        self._ordinal = today.toordinal()
        self.codes: set[str] = set()
        self.usccs: set[str] = set()
        self.counter = 0

    def day(self, offset: int) -> datetime.date:
        return datetime.date.fromordinal(self._ordinal + offset)

    def next_id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.seed}-{self.counter}"

    def person(self) -> str:
        given = "".join(self.rng.choices(GIVEN_CHARS, k=self.rng.choice((1, 2))))
        return self.rng.choice(SURNAMES) + given

    def mobile(self) -> str:
        return (
            self.rng.choice(("138", "139", "150", "186", "177", "199")) + f"{self.rng.randrange(10**8):08d}"
        )

    def id_number(self) -> str:
        born = self.day(-self.rng.randrange(20 * 365, 60 * 365))
        body = f"310104{born:%Y%m%d}{self.rng.randrange(1000):03d}"
        check = "10X98765432"[sum(int(c) * w for c, w in zip(body, _ID_WEIGHTS, strict=True)) % 11]
        return body + check

    def shop_code(self) -> str:
        while (code := new_shop_code(self.rng.getrandbits(60))) in self.codes:
            pass
        self.codes.add(code)
        return code

    def uscc(self, district: str) -> str:
        while True:
            body = self.rng.choice(("92", "91")) + district + "".join(self.rng.choices(USCC_ALPHABET, k=9))
            code = body + uscc_check_char(body)
            if code not in self.usccs:
                self.usccs.add(code)
                return code


def shop_row(g: Gen, area_id: int, district: str) -> Row:
    rng = g.rng
    trade = rng.choices(_TRADE_NAMES, _TRADE_WEIGHTS)[0]
    prefix, prefix_en = rng.choice(SHOP_PREFIXES)
    suffix, noun = rng.choice(TRADES[trade][1])
    roll = rng.random()
    status = "active" if roll < 0.95 else ("suspended" if roll < 0.97 else "closed")
    address = f"{rng.choice(ROADS)}{rng.randrange(1, 1500)}号"
    return (
        g.shop_code(),
        g.uscc(district),
        prefix + suffix,
        f"{prefix_en} {noun}",
        trade,
        area_id,
        address,
        round(31.18 + rng.gauss(0, 0.015), 6),
        round(121.43 + rng.gauss(0, 0.015), 6),
        f"021-{rng.randrange(10**7, 10**8)}",
        TRADES[trade][2],
        status,
        g.now,
        g.person(),
        g.mobile(),
        g.id_number(),
        g.now,
        g.now,
    )


def licence_rows(g: Gen, shop_id: int, trade: str, uscc: str) -> list[Row]:
    rng = g.rng
    rows = []
    for kind in ["business", *TRADE_LICENCES.get(trade, [])]:
        roll, status = rng.random(), "active"
        if roll < 0.05:
            valid_to: datetime.date | None = g.day(rng.randrange(0, 31))
        elif roll < 0.12:
            valid_to = g.day(-rng.randrange(1, 400))
        else:
            valid_to = g.day(rng.randrange(31, 1800))
            status = "pending_verification" if roll < 0.15 else ("revoked" if roll < 0.16 else "active")
        if kind == "business" and roll >= 0.16 and rng.random() < 0.7:
            valid_to = None  # 长期: most business licences have no end date
        valid_from = (valid_to or g.day(rng.randrange(31, 1800))) - datetime.timedelta(days=1825)
        number = uscc if kind == "business" else _licence_number(rng, kind)
        rows.append(
            (
                shop_id,
                "seed",
                g.next_id("L"),
                kind,
                number,
                uscc,
                valid_from,
                valid_from,
                valid_to,
                status,
                g.now,
                g.now,
            )
        )
    return rows


def _licence_number(rng: random.Random, kind: str) -> str:
    digits = f"{rng.randrange(10**8):08d}"
    return {
        "food_business": f"JY1310199{digits[:5]}{rng.randrange(10)}",
        "pharmacy": f"沪AA0{digits[:7]}",
        "hygiene": f"沪卫公字[20{rng.randrange(15, 26)}]第{digits[:6]}号",
        "education": f"教民131019970{digits}",
        "entertainment": f"文娱经营{digits[:6]}",
    }[kind]


def inspection_rows(g: Gen, shop_id: int, trade: str) -> list[tuple[Row, list[tuple[str, str, bool, bool]]]]:
    """Inspections of one shop, each with its violations (joined to ids after the COPY)."""
    rng = g.rng
    food = trade in _FOOD
    count = rng.choices((0, 1, 2, 3), (10, 30, 35, 25) if food else (50, 40, 10, 0))[0]
    days = sorted(rng.sample(range(1, 1096), count), reverse=True)
    out = []
    for ago in days:
        roll = rng.random()
        result = "pass" if roll < 0.75 else ("rectify" if roll < 0.95 else "fail")
        grade = _grade(rng, result) if food else None
        low, high = {"A": (90, 100), "B": (75, 90), "C": (60, 75), None: (60, 100)}[grade]
        score = round(rng.uniform(low, high), 1)
        on = g.day(-ago)
        due = on + datetime.timedelta(days=rng.randrange(7, 31)) if result == "rectify" else None
        kind = rng.choices(("routine", "complaint", "follow_up"), (80, 10, 10))[0]
        row = (
            shop_id,
            "seed",
            g.next_id("I"),
            on,
            kind,
            score,
            result,
            grade,
            due,
            rng.choice(INSPECTION_SUMMARIES[result]),
            g.now,
            g.now,
        )
        n_viol = rng.randrange(1, 5) if result != "pass" else rng.choices((0, 1), (85, 15))[0]
        picked = rng.sample(VIOLATIONS, n_viol)
        out.append((row, [(code, text, critical, result == "pass") for code, text, critical in picked]))
    return out


def _grade(rng: random.Random, result: str) -> str:
    if result == "pass":
        return "A" if rng.random() < 0.7 else "B"
    if result == "rectify":
        return "B" if rng.random() < 0.6 else "C"
    return "C"


def review_rows(g: Gen, shop_id: int, trade: str) -> list[Row]:
    if trade not in _REVIEWED:
        return []
    rng = g.rng
    rows = []
    for _ in range(rng.randrange(0, 5)):
        rating = rng.choices((1, 2, 3, 4, 5), (5, 7, 15, 33, 40))[0]
        posted = g.now - datetime.timedelta(seconds=rng.randrange(365 * 86400))
        rows.append(
            (
                shop_id,
                "seed",
                g.next_id("R"),
                rating,
                rng.choice(REVIEW_BODIES[rating]),
                f"用户{rng.randrange(16**4):04X}",
                posted,
                g.now,
            )
        )
    return rows


def staff_rows(g: Gen, shop_id: int, trade: str) -> list[Row]:
    if trade not in _FOOD:
        return []
    rng = g.rng
    return [
        (
            shop_id,
            "seed",
            g.next_id("P"),
            g.person(),
            g.id_number(),
            g.mobile(),
            rng.choice(STAFF_ROLES),
            f"JK{rng.randrange(10**10):010d}",
            g.day(rng.randrange(-60, 366)),
            True,
            g.now,
        )
        for _ in range(rng.randrange(1, 4))
    ]


def honour_rows(g: Gen, shop_id: int) -> list[Row]:
    if g.rng.random() >= 0.03:
        return []
    title, issuer = g.rng.choice(HONOURS)
    return [(shop_id, "seed", g.next_id("H"), title, issuer, g.day(-g.rng.randrange(30, 700)), True, g.now)]


def pick(rng: random.Random, items: Sequence[Any]) -> Any:
    return items[rng.randrange(len(items))]
