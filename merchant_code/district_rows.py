"""Row generators for the synthetic district: plain tuples in COPY column order.

Each chunk of shops has its own `random.Random` seeded from (seed, chunk number), so chunks can
be generated in parallel processes and still come out the same for the same seed. Shop codes
and USCCs are a keyed permutation of the shop's number, so they are unique without a lookup
across chunks and unguessable without the seed. Dates come from `today`, never from the clock.
"""

from __future__ import annotations

import datetime
import hashlib
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


def permute(value: int, bits: int, key: bytes) -> int:
    """A 4-round Feistel network: a bijection on `bits`-bit numbers, keyed."""
    half = bits // 2
    mask = (1 << half) - 1
    left, right = value >> half, value & mask
    for round_no in range(4):
        digest = hashlib.blake2b(right.to_bytes(8, "big"), digest_size=8, key=key + bytes([round_no]))
        left, right = right, left ^ (int.from_bytes(digest.digest(), "big") & mask)
    return (left << half) | right


class Gen:
    """The generator's state for one chunk: its random stream, the day, a counter for ids."""

    def __init__(self, seed: int, today: datetime.date, chunk: int = 0) -> None:
        self.rng = random.Random(f"merchant-code/{seed}/{chunk}")
        self.seed = seed
        self.chunk = chunk
        self.key = hashlib.sha256(f"merchant-code/{seed}".encode()).digest()[:16]
        self.today = today
        self.now = datetime.datetime.combine(today, datetime.time(8), datetime.UTC)
        self._ordinal = today.toordinal()
        self.counter = 0

    def day(self, offset: int) -> datetime.date:
        return datetime.date.fromordinal(self._ordinal + offset)

    def next_id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.seed}-{self.chunk}-{self.counter}"

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

    def shop_code(self, number: int) -> str:
        return new_shop_code(permute(number, 60, self.key))

    def uscc(self, number: int, district: str) -> str:
        # 44 bits fit in 9 base-31 symbols (31**9 > 2**44): unique per shop number
        value = permute(number, 44, self.key + b"uscc")
        symbols = []
        for _ in range(9):
            value, digit = divmod(value, 31)
            symbols.append(USCC_ALPHABET[digit])
        body = self.rng.choice(("92", "91")) + district + "".join(symbols)
        return body + uscc_check_char(body)


def shop_row(g: Gen, number: int, area_id: int, district: str) -> Row:
    rng = g.rng
    trade = rng.choices(_TRADE_NAMES, _TRADE_WEIGHTS)[0]
    prefix, prefix_en = rng.choice(SHOP_PREFIXES)
    suffix, noun = rng.choice(TRADES[trade][1])
    roll = rng.random()
    status = "active" if roll < 0.95 else ("suspended" if roll < 0.97 else "closed")
    address = f"{rng.choice(ROADS)}{rng.randrange(1, 1500)}号"
    return (
        g.shop_code(number),
        g.uscc(number, district),
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


def make_chunk(
    seed: int, today: datetime.date, chunk: int, start: int, size: int, grids: list[int], district: str
) -> dict[str, list[Row]]:
    """Every row of one chunk of shops. Children name their parent by its index in this chunk
    (shop_id, inspection_id), to be swapped for the real id once the parent rows are copied."""
    g = Gen(seed, today, chunk)
    out: dict[str, list[Row]] = {
        k: [] for k in ("shop", "licence", "inspection", "violation", "review", "staff", "honour")
    }
    for k in range(size):
        shop = shop_row(g, start + k, pick(g.rng, grids), district)
        out["shop"].append(shop)
        trade = shop[4]
        out["licence"] += licence_rows(g, k, trade, shop[1])
        for row, found in inspection_rows(g, k, trade):
            out["violation"] += [(len(out["inspection"]), *v) for v in found]
            out["inspection"].append(row)
        out["review"] += review_rows(g, k, trade)
        out["staff"] += staff_rows(g, k, trade)
        out["honour"] += honour_rows(g, k)
    return out
