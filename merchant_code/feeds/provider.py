"""The demo's local data provider: the demo district's data served on loopback in the five feed
formats (LIVES zip, FHRS-style pages, licence registry, review platform, RSS 2.0), so that the
scheduler pulls real HTTP and a person sees profiles change as feeds arrive.

Time is cut into buckets of `bucket_seconds` counted from the Unix epoch; every bucket that has
ended since the provider's epoch (a fixed date: midnight UTC `history_days` before today, so a
fresh demo already has history) adds a few records: inspections, licence renewals, FHRS
re-ratings, reviews (with edits and now and then a deletion) and news items. Every record is
derived from (seed, bucket, index) with random.Random, so answers are stable across requests and
restarts; the clock is injectable (`now=`) for tests. The counts per bucket scale with the
district: 2,000 shops give about 10 inspections, 2 renewals, 15 review entries and 2 news items.

With `drift_after` (seconds after the provider starts; the demo sets it), the LIVES publisher of
the multi-file zip "changes its system" from then on: its inspections file renames the `type`
column to `inspection_type`, and the scores of the inspections made from then on are inverted
(100 - score, so a clean pass scores low), so that the demo shows the quality report failing and
its case.

    provider = start(await load_shops(conn), seed)
    await register(conn, demo_sources(provider.base_url))
    ...
    provider.stop()
"""

from __future__ import annotations

import base64
import binascii
import csv
import datetime
import email.utils
import hashlib
import http.server
import io
import json
import logging
import random
import re
import threading
import zipfile
from collections.abc import Callable
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

import asyncpg
import msgspec

from merchant_code.district import DISTRICT_CODE
from merchant_code.district_words import (
    INSPECTION_SUMMARIES,
    REVIEW_BODIES,
    SENTIMENT,
    SURNAMES,
    VIOLATIONS,
)

log = logging.getLogger(__name__)

BEIJING = datetime.timezone(datetime.timedelta(hours=8))
FOOD_TRADES = frozenset({"catering", "food_retail"})
# the LIVES shapes the demo publishes, each for its own share of the shops (see lives_shape)
LIVES_SHAPES = ("multi", "flat", "flat_zip", "minimal")
# names the RSS candidate extraction takes whole when quoted (rss.py's shop words)
_SHOP_NAME = re.compile(r"(?:超市|药房|药店|便利店|餐厅|饭店|酒家|酒楼|茶楼|诊所|商行|KTV|店|馆|坊|铺)$")
_NEWS_ITEMS = 50
_MAX_LIMIT = 5000


class ProviderShop(msgspec.Struct, frozen=True):
    code: str
    uscc: str
    name: str
    address: str
    lat: float | None
    lon: float | None
    phone: str | None
    trade: str


class SourceSpec(msgspec.Struct, frozen=True):
    name: str
    kind: str
    url: str
    config: dict[str, Any]
    interval_seconds: int


async def load_shops(conn: asyncpg.Connection) -> list[ProviderShop]:
    """The active shops of the demo district, by id."""
    rows = await conn.fetch(
        "SELECT s.code, s.uscc, s.name, s.address, s.lat, s.lon, s.phone, s.trade"
        " FROM shop s JOIN area a ON a.id = s.area_id"
        " WHERE s.status = 'active' AND (a.path = $1 OR a.path LIKE $1 || '.%') ORDER BY s.id",
        DISTRICT_CODE,
    )
    return [ProviderShop(**dict(r)) for r in rows]


def demo_sources(base: str) -> list[SourceSpec]:
    """The feed_source rows that pull the provider at `base` (e.g. http://127.0.0.1:PORT): every
    LIVES shape, FHRS, the licence registry, the review platform and RSS."""
    base = base.rstrip("/")
    private = {"allow_private": True}
    return [
        SourceSpec("demo-lives", "lives", f"{base}/lives.zip", private, 300),
        SourceSpec(
            "demo-lives-flat",
            "lives",
            f"{base}/lives-flat.csv",
            {**private, "variant": "flat", "unstable_ids": True},  # its inspection_id is a row counter
            300,
        ),
        SourceSpec(
            "demo-lives-flat-zip", "lives", f"{base}/lives-flat.zip", {**private, "variant": "flat"}, 300
        ),
        SourceSpec("demo-lives-min", "lives", f"{base}/lives-min.csv", private, 600),
        SourceSpec("demo-fhrs", "fhrs", f"{base}/Establishments", {**private, "page_size": 200}, 300),
        SourceSpec("demo-licences", "licence_registry", f"{base}/licences", {**private, "limit": 500}, 120),
        SourceSpec("demo-reviews", "review_platform", f"{base}/reviews", {**private, "limit": 200}, 60),
        SourceSpec("demo-news", "rss", f"{base}/news.rss", private, 120),
    ]


async def register(conn: asyncpg.Connection, sources: list[SourceSpec]) -> None:
    """Insert the sources or bring them up to date (a new port on every demo start)."""
    for s in sources:
        await conn.execute(
            "INSERT INTO feed_source (kind, name, url, config, interval_seconds) VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, url = excluded.url,"
            " config = excluded.config, interval_seconds = excluded.interval_seconds",
            s.kind,
            s.name,
            s.url,
            s.config,
            s.interval_seconds,
        )


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _digest_int(text: str, digits: int) -> int:
    value = int(hashlib.sha256(text.encode()).hexdigest(), 16)
    modulus: int = 10**digits
    return value % modulus


def _iso(moment: datetime.datetime) -> str:
    return moment.astimezone(BEIJING).isoformat()


# --- the records of one bucket ------------------------------------------------------------------


class _Inspection(msgspec.Struct, frozen=True):
    shop: ProviderShop
    at: datetime.datetime
    score: int
    result: Literal["Pass", "Conditional", "Fail"]
    description: str
    type: str
    violations: tuple[tuple[str, str, bool], ...]


class _Licence(msgspec.Struct, frozen=True):
    shop: ProviderShop
    number: str
    kind: str
    valid_from: datetime.date
    status: str
    at: datetime.datetime


class _Review(msgspec.Struct, frozen=True):
    id: str
    shop: ProviderShop
    rating: int
    text: str | None
    author: str | None
    created_at: datetime.datetime
    at: datetime.datetime  # updated_at: the entry's place in the stream
    deleted: bool = False


class _News(msgspec.Struct, frozen=True):
    guid: str
    shop: ProviderShop
    title: str
    summary: str
    tone: str
    at: datetime.datetime


class _Rating(msgspec.Struct, frozen=True):
    value: str  # "0".."5", "AwaitingInspection", "Exempt"
    day: datetime.date | None
    scores: tuple[int, int, int] | None


class Provider:
    def __init__(
        self,
        shops: list[ProviderShop],
        seed: int,
        *,
        bucket_seconds: int = 120,
        history_days: int = 2,
        epoch: datetime.datetime | None = None,
        now: Callable[[], datetime.datetime] = _utc_now,
        drift_after: int | None = None,
    ) -> None:
        if not shops:
            raise ValueError("the provider needs at least one shop")
        if bucket_seconds < 1:
            raise ValueError("bucket_seconds must be at least 1")
        self.shops = list(shops)
        self.seed = seed
        self.bucket_seconds = bucket_seconds
        self.now = now
        if epoch is None:
            today = now().astimezone(datetime.UTC).date() - datetime.timedelta(days=history_days)
            epoch = datetime.datetime.combine(today, datetime.time(), datetime.UTC)
        self.epoch = epoch
        self.first_bucket = self._bucket_of(epoch)
        # the first bucket of the LIVES publisher's drift (None: it never drifts)
        self.drift_from = None
        if drift_after is not None:
            self.drift_from = self._bucket_of(now()) + -(-drift_after // bucket_seconds)
        n = len(self.shops)
        self.food = [s for s in self.shops if s.trade in FOOD_TRADES]
        self.newsworthy = [s for s in self.shops if _SHOP_NAME.search(s.name)] or self.shops
        self.per_bucket = {
            "inspections": max(1, round(n / 200)),
            "licences": max(1, round(n / 1000)),
            "reviews": max(1, round(n / 133)),
            "ratings": max(1, round(len(self.food) / 400)) if self.food else 0,
            "news": max(1, round(n / 1000)),
        }
        self._cache: dict[tuple[str, int], Any] = {}
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- time ------------------------------------------------------------------------------

    def _bucket_of(self, moment: datetime.datetime) -> int:
        return int(moment.timestamp()) // self.bucket_seconds

    def _bucket_start(self, bucket: int) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(bucket * self.bucket_seconds, datetime.UTC)

    def buckets(self) -> range:
        """The buckets that have ended since the epoch, oldest first."""
        return range(self.first_bucket, self._bucket_of(self.now()))

    def _rng(self, kind: str, bucket: int) -> random.Random:
        return random.Random(f"{self.seed}:{kind}:{bucket}")

    def _moment(self, bucket: int, i: int, n: int, rng: random.Random) -> datetime.datetime:
        """A time inside the bucket, strictly increasing with i (microseconds apart at least)."""
        span = self.bucket_seconds * 1_000_000
        offset = int((i + rng.random()) * span / n)
        return self._bucket_start(bucket) + datetime.timedelta(microseconds=min(offset, span - 1))

    def _cached(self, kind: str, bucket: int, make: Callable[[int], Any]) -> Any:
        key = (kind, bucket)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        value = make(bucket)
        with self._lock:
            self._cache[key] = value
        return value

    # --- generators: pure functions of (seed, bucket, index) --------------------------------

    def _inspections(self, bucket: int) -> list[_Inspection]:
        rng = self._rng("inspection", bucket)
        n = self.per_bucket["inspections"]
        out = []
        for i in range(n):
            shop = rng.choice(self.shops)
            roll = rng.random()
            result: Literal["Pass", "Conditional", "Fail"]
            if roll < 0.75:
                result, score, found = "Pass", rng.randrange(85, 101), rng.choice((0, 0, 0, 1))
                summary = rng.choice(INSPECTION_SUMMARIES["pass"])
            elif roll < 0.93:
                result, score, found = "Conditional", rng.randrange(65, 85), rng.randrange(1, 4)
                summary = rng.choice(INSPECTION_SUMMARIES["rectify"])
            else:
                result, score, found = "Fail", rng.randrange(30, 65), rng.randrange(2, 5)
                summary = rng.choice(INSPECTION_SUMMARIES["fail"])
            pool = VIOLATIONS if result == "Fail" else [v for v in VIOLATIONS if not v[2] or found > 1]
            violations = tuple(rng.sample(pool, found))
            kind = rng.choices(("Routine", "Complaint", "Reinspection/Followup"), (80, 10, 10))[0]
            out.append(
                _Inspection(shop, self._moment(bucket, i, n, rng), score, result, summary, kind, violations)
            )
        return out

    def _licence_number(self, shop: ProviderShop, kind: str) -> str:
        if kind == "business":
            return shop.uscc  # the business licence carries the USCC as its number
        return f"JY13101{_digest_int(shop.uscc, 9):09d}"

    def _licences(self, bucket: int) -> list[_Licence]:
        rng = self._rng("licence", bucket)
        n = self.per_bucket["licences"]
        out = []
        for i in range(n):
            shop = rng.choice(self.shops)
            food = shop.trade in FOOD_TRADES and rng.random() < 0.7
            kind = "food_business" if food else "business"
            roll = rng.random()
            status = "有效"
            if food and roll < 0.03:
                status = "吊销"
            elif food and roll < 0.07:
                status = "暂停"
            at = self._moment(bucket, i, n, rng)
            day = at.astimezone(BEIJING).date()
            out.append(_Licence(shop, self._licence_number(shop, kind), kind, day, status, at))
        return out

    def _new_reviews(self, bucket: int) -> list[_Review]:
        """The reviews first posted in this bucket."""
        rng = self._rng("review", bucket)
        n = self.per_bucket["reviews"]
        out = []
        for j in range(n):
            shop = rng.choice(self.shops)
            rating = rng.choices((1, 2, 3, 4, 5), (5, 7, 18, 35, 35))[0]
            author = rng.choice(SURNAMES) + "**"
            at = self._moment(bucket, j, n, rng)
            out.append(
                _Review(f"r-{bucket}-{j}", shop, rating, rng.choice(REVIEW_BODIES[rating]), author, at, at)
            )
        return out

    def _reviews(self, bucket: int) -> list[_Review]:
        """The stream entries of this bucket, by (time, id): the new reviews, edits of earlier ones
        (even slots) and now and then a deletion (odd slots, so never edited afterwards)."""
        rng = self._rng("review-ops", bucket)
        entries: list[_Review] = list(self._cached("new-reviews", bucket, self._new_reviews))
        start = self._bucket_start(bucket)
        span = self.bucket_seconds * 1_000_000
        for _ in range(rng.choice((0, 1, 1, 2))):
            olds = self._cached("new-reviews", bucket - rng.randrange(1, 200), self._new_reviews)[0::2]
            if olds:
                old = rng.choice(olds)
                rating = max(1, min(5, old.rating + rng.choice((-2, -1, 1, 1, 2))))
                body = f"{rng.choice(REVIEW_BODIES[rating])}（追评）"
                at = start + datetime.timedelta(microseconds=rng.randrange(span))
                entries.append(msgspec.structs.replace(old, rating=rating, text=body, at=at))
        if rng.random() < 0.3:
            olds = self._cached("new-reviews", bucket - rng.randrange(1, 200), self._new_reviews)[1::2]
            if olds:
                at = start + datetime.timedelta(microseconds=rng.randrange(span))
                old = rng.choice(olds)
                entries.append(msgspec.structs.replace(old, text=None, author=None, at=at, deleted=True))
        return sorted(entries, key=lambda x: (x.at, x.id))

    def _news(self, bucket: int) -> list[_News]:
        rng = self._rng("news", bucket)
        n = self.per_bucket["news"]
        out = []
        for i in range(n):
            shop = rng.choice(self.newsworthy)
            template, tone = rng.choice(SENTIMENT)
            title = template.format(name=f"「{shop.name}」")
            follow_up = rng.choice(("街道已介入了解", "记者现场核实", "市民可拨打12315反映"))
            summary = f"{shop.name}，地址：{shop.address}。{follow_up}。"
            out.append(
                _News(f"demo-news-{bucket}-{i}", shop, title, summary, tone, self._moment(bucket, i, n, rng))
            )
        return out

    def _ratings(self, bucket: int) -> list[tuple[ProviderShop, _Rating]]:
        rng = self._rng("rating", bucket)
        out = []
        for i in range(self.per_bucket["ratings"]):
            shop = rng.choice(self.food)
            at = self._moment(bucket, i, self.per_bucket["ratings"], rng)
            out.append((shop, self._rating(rng, at.date())))
        return out

    @staticmethod
    def _rating(rng: random.Random, day: datetime.date) -> _Rating:
        value = rng.choices(range(6), (2, 3, 8, 17, 30, 40))[0]
        scores = ((5 - value) * 5, rng.choice((0, 5, 10)), rng.choice((0, 5, 10)))
        return _Rating(str(value), day, scores)

    def _base_rating(self, shop: ProviderShop) -> _Rating:
        """A food shop's rating before the epoch (some are not rated yet)."""
        rng = random.Random(f"{self.seed}:base-rating:{shop.uscc}")
        roll = rng.random()
        if roll < 0.05:
            return _Rating("AwaitingInspection", None, None)
        if roll < 0.08:
            return _Rating("Exempt", None, None)
        day = self.epoch.date() - datetime.timedelta(days=rng.randrange(1, 700))
        return self._rating(rng, day)

    # --- the five formats ----------------------------------------------------------------------

    def lives_shape(self, shop: ProviderShop) -> str:
        """Which of the LIVES shapes carries this shop's inspections (each shop is in one)."""
        return LIVES_SHAPES[_digest_int("lives-shape:" + shop.uscc, 6) % len(LIVES_SHAPES)]

    def _visits(self, shape: str) -> list[_Inspection]:
        """The inspections published in one shape, oldest first, one per business and day."""
        out: list[_Inspection] = []
        seen: set[tuple[str, datetime.date]] = set()
        for bucket in self.buckets():
            for x in self._cached("inspection", bucket, self._inspections):
                day = x.at.astimezone(BEIJING).date()
                if self.lives_shape(x.shop) != shape or (x.shop.uscc, day) in seen:
                    continue
                seen.add((x.shop.uscc, day))
                out.append(x)
        return out

    def _feed_info(self, **extra: str) -> str:
        today = self.now().astimezone(BEIJING).date()
        rows = {
            "feed_date": f"{today:%Y%m%d}",
            "feed_version": str(self._bucket_of(self.now())),
            "municipality_name": "汇城区市场监督管理局",
            "municipality_url": "https://scjgj.example.gov.cn/",
            "contact_email": "open-data@scjgj.example.gov.cn",
            **extra,
        }
        return _csv([list(rows), list(rows.values())])

    def lives_zip(self) -> bytes:
        """The multi-file set: businesses, inspections (with the optional result), violations and
        feed_info, as San Francisco and the first LIVES publishers ship it."""
        businesses: dict[str, ProviderShop] = {}
        drifted = self.drift_from is not None and self._bucket_of(self.now()) >= self.drift_from
        kind_column = "inspection_type" if drifted else "type"
        inspections = [["business_id", "score", "date", "description", kind_column, "result"]]
        violations = [["business_id", "date", "description", "code", "critical"]]
        for x in self._visits("multi"):
            day = x.at.astimezone(BEIJING).strftime("%Y%m%d")
            businesses[x.shop.uscc] = x.shop
            inverted = self.drift_from is not None and self._bucket_of(x.at) >= self.drift_from
            score = 100 - x.score if inverted else x.score
            inspections.append([x.shop.uscc, str(score), day, x.description, x.type, x.result])
            for code, text, critical in x.violations:
                violations.append([x.shop.uscc, day, text, code, "Y" if critical else "N"])
        shops = [
            [
                "business_id",
                "name",
                "address",
                "city",
                "state",
                "postal_code",
                "latitude",
                "longitude",
                "phone_number",
            ]
        ]
        for s in businesses.values():
            lat, lon = str(_num(s.lat)), str(_num(s.lon))
            shops.append([s.uscc, s.name, s.address, "上海市", "SH", "200030", lat, lon, s.phone or ""])
        return _zip(
            {
                "businesses.csv": _csv(shops),
                "inspections.csv": _csv(inspections),
                "violations.csv": _csv(violations),
                "feed_info.csv": self._feed_info(),
            }
        )

    def lives_flat_csv(self) -> bytes:
        """The flattened one-file variant as a spreadsheet export gives it: columns in their own
        order and casing, newest first, ISO timestamps with an offset, `NULL` for what is not
        known, descriptions with commas and line breaks (quoted), and an `inspection_id` that is
        only the inspection's place in the file, so it changes whenever a new one comes first."""
        header = [
            "Inspection_ID",
            "BUSINESS_ID",
            "Business_Name",
            "business_address",
            "Business_Phone_Number",
            "INSPECTION_DATE",
            "Inspection_Score",
            "Inspection_Result",
            "Inspection_Type",
            "Inspection_Description",
            "Violation_Code",
            "Violation_Description",
            "Violation_Critical",
        ]
        rows = [header]
        for n, x in enumerate(reversed(self._visits("flat")), start=1):
            s = x.shop
            at = x.at.astimezone(BEIJING).replace(microsecond=0).isoformat()
            summary = f"{x.description}\n（检查人员：两名，执法记录仪全程记录）"
            head = [
                str(n),
                s.uscc,
                s.name,
                s.address,
                s.phone or "NULL",
                at,
                str(x.score),
                x.result,
                x.type,
                summary,
            ]
            found = x.violations or ((None, None, None),)
            for code, text, critical in found:
                if code is None:
                    rows.append([*head, "NULL", "NULL", "NULL"])
                else:
                    rows.append([*head, code, f"{text}, 现场已责令改正", "Yes" if critical else "No"])
        return ("\ufeff" + _csv(rows, "\r\n")).encode()

    def lives_flat_zip(self) -> bytes:
        """The flattened variant zipped in a folder with `feed_info.csv` (declaring its scoring
        method) and `legend.csv`: no result column (the legend's ranges give it), no critical
        column (unknown), dates as `YYYY-MM-DD`, ids that are the publisher's own and stable."""
        rows = [
            [
                "inspection_id",
                "business_id",
                "business_name",
                "business_address",
                "inspection_date",
                "inspection_score",
                "inspection_type",
                "violation_code",
                "violation_description",
            ]
        ]
        for x in self._visits("flat_zip"):
            s, day = x.shop, x.at.astimezone(BEIJING).date().isoformat()
            visit = f"HC-{_digest_int(f'{s.uscc}:{x.at.isoformat()}', 10):010d}"
            head = [visit, s.uscc, s.name, s.address, day, str(x.score), x.type]
            for code, text, _ in x.violations or (("", "", False),):
                rows.append([*head, code, text])
        legend = _csv(
            [
                ["minimum_score", "maximum_score", "description"],
                ["85", "100", "合格"],
                ["65", "84", "限期整改"],
                ["0", "64", "不合格"],
            ]
        )
        return _zip(
            {
                "huicheng-inspections/inspections_flat.csv": _csv(rows),
                "huicheng-inspections/feed_info.csv": self._feed_info(scoring_method="graded"),
                "huicheng-inspections/legend.csv": legend,
            }
        )

    def lives_min_csv(self) -> bytes:
        """`inspections.csv` alone with only the columns the spec requires: no result, no
        businesses file (business_id is the USCC), as the smallest publishers ship it."""
        rows = [["business_id", "score", "date"]]
        for x in self._visits("minimal"):
            rows.append([x.shop.uscc, str(x.score), x.at.astimezone(BEIJING).strftime("%Y%m%d")])
        return _csv(rows).encode()

    def fhrsid(self, shop: ProviderShop) -> int:
        return 1_000_000_000 + _digest_int("fhrs:" + shop.uscc, 9)

    def establishments(self, page: int, size: int) -> bytes:
        current = {s.uscc: self._base_rating(s) for s in self.food}
        for bucket in self.buckets():
            for shop, rating in self._cached("rating", bucket, self._ratings):
                current[shop.uscc] = rating
        total = len(self.food)
        pages = max(1, -(-total // size))
        items = []
        for shop in self.food[(page - 1) * size : page * size]:
            rating = current[shop.uscc]
            scores = rating.scores
            items.append(
                {
                    "FHRSID": self.fhrsid(shop),
                    "BusinessName": shop.name,
                    "BusinessType": "Restaurant/Cafe/Canteen"
                    if shop.trade == "catering"
                    else "Retailers - other",
                    "AddressLine1": shop.address,
                    "AddressLine2": "",
                    "AddressLine3": "",
                    "AddressLine4": "",
                    "PostCode": "200030",
                    "Phone": shop.phone or "",
                    "RatingValue": rating.value,
                    "RatingKey": f"fhrs_{rating.value.lower()}_en-gb",
                    "RatingDate": f"{rating.day.isoformat()}T00:00:00"
                    if rating.day
                    else "0001-01-01T00:00:00",
                    "LocalAuthorityName": "汇城区",
                    "scores": {
                        "Hygiene": scores[0] if scores else "",
                        "Structural": scores[1] if scores else "",
                        "ConfidenceInManagement": scores[2] if scores else "",
                    },
                    "geocode": {"longitude": _num(shop.lon), "latitude": _num(shop.lat)},
                }
            )
        meta = {
            "dataSource": "Lucene",
            "totalCount": total,
            "totalPages": pages,
            "pageSize": size,
            "pageNumber": page,
        }
        return json.dumps({"establishments": items, "meta": meta, "links": []}, ensure_ascii=False).encode()

    def licences(self, since: datetime.datetime | None, limit: int) -> bytes:
        items: list[_Licence] = []
        start = self.first_bucket if since is None else max(self.first_bucket, self._bucket_of(since))
        for bucket in range(start, self._bucket_of(self.now())):
            for x in self._cached("licence", bucket, self._licences):
                if since is None or x.at >= since:
                    items.append(x)
                    if len(items) > limit:
                        break
            if len(items) > limit:
                break
        page, more = items[:limit], len(items) > limit
        body: dict[str, Any] = {"items": [self._licence_item(x) for x in page], "has_more": more}
        if page:
            body["next_updated_since"] = _iso(page[-1].at)
        return json.dumps(body, ensure_ascii=False).encode()

    @staticmethod
    def _licence_item(x: _Licence) -> dict[str, Any]:
        business = x.kind == "business"
        try:
            valid_to = x.valid_from.replace(year=x.valid_from.year + 5) - datetime.timedelta(days=1)
        except ValueError:  # 29 February
            valid_to = x.valid_from.replace(year=x.valid_from.year + 5, day=28)
        return {
            "licence_no": x.number,
            "kind": "营业执照" if business else "食品经营许可证",
            "holder_uscc": x.shop.uscc,
            "holder_name": x.shop.name,
            "issued_on": x.valid_from.isoformat(),
            "valid_from": x.valid_from.isoformat(),
            "valid_to": "长期" if business else valid_to.isoformat(),
            "status": x.status,
            "updated_at": _iso(x.at),
        }

    def reviews(self, cursor: tuple[int, int] | None, limit: int) -> bytes:
        bucket, index = cursor or (self.first_bucket, 0)
        if bucket < self.first_bucket:
            bucket, index = self.first_bucket, 0
        end = self._bucket_of(self.now())
        data: list[dict[str, Any]] = []
        following: str | None = None
        while bucket < end:
            entries = self._cached("reviews", bucket, self._reviews)
            while index < len(entries) and len(data) < limit:
                data.append(self._review_item(entries[index]))
                index += 1
            if index >= len(entries):
                bucket, index = bucket + 1, 0
            if len(data) >= limit:
                if bucket < end:
                    following = _cursor(bucket, index)
                break
        return json.dumps({"data": data, "next_cursor": following}, ensure_ascii=False).encode()

    @staticmethod
    def _review_item(x: _Review) -> dict[str, Any]:
        item: dict[str, Any] = {
            "id": x.id,
            "business_ref": x.shop.uscc,
            "rating": x.rating,
            "created_at": _iso(x.created_at),
            "updated_at": _iso(x.at),
            "deleted": x.deleted,
        }
        if not x.deleted:
            item["text"], item["author"] = x.text, x.author
        return item

    def news(self) -> tuple[bytes, str, str]:
        """The RSS document of the newest items, its ETag and its Last-Modified."""
        items: list[_News] = []
        for bucket in reversed(self.buckets()):
            items[:0] = self._cached("news", bucket, self._news)
            if len(items) >= _NEWS_ITEMS:
                break
        items = sorted(items, key=lambda x: x.at, reverse=True)[:_NEWS_ITEMS]
        newest = items[0].at if items else self.epoch
        parts = [
            '<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0"><channel>',
            "<title>汇城区消费新闻</title><link>https://news.example.org/demo/</link>",
            "<description>汇城区商户相关新闻（演示数据）</description><language>zh-cn</language>",
            f"<lastBuildDate>{email.utils.format_datetime(newest)}</lastBuildDate>",
        ]
        for x in items:
            parts.append(
                "<item>"
                f"<title>{escape(x.title)}</title>"
                f"<link>https://news.example.org/demo/{x.guid}</link>"
                f'<guid isPermaLink="false">{x.guid}</guid>'
                f"<description>{escape(x.summary)}</description>"
                f"<pubDate>{email.utils.format_datetime(x.at.astimezone(BEIJING))}</pubDate>"
                f"<category>{x.tone}</category>"
                "</item>"
            )
        parts.append("</channel></rss>\n")
        body = "".join(parts).encode()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        return body, etag, email.utils.format_datetime(newest, usegmt=True)

    # --- HTTP --------------------------------------------------------------------------------

    def answer(self, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) for a GET of `path` (with its query)."""
        url = urlsplit(path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            if url.path == "/lives.zip":
                return 200, {"content-type": "application/zip"}, self.lives_zip()
            if url.path == "/lives-flat.zip":
                return 200, {"content-type": "application/zip"}, self.lives_flat_zip()
            if url.path == "/lives-flat.csv":
                return 200, {"content-type": "text/csv; charset=utf-8"}, self.lives_flat_csv()
            if url.path == "/lives-min.csv":
                return 200, {"content-type": "text/csv"}, self.lives_min_csv()
            if url.path == "/Establishments":
                page = _int(query.get("pageNumber"), 1, 1, 10**6)
                size = _int(query.get("pageSize"), 500, 1, _MAX_LIMIT)
                return 200, _JSON, self.establishments(page, size)
            if url.path == "/licences":
                since = query.get("updated_since")
                moment = datetime.datetime.fromisoformat(since) if since else None
                if moment is not None and moment.tzinfo is None:
                    moment = moment.replace(tzinfo=BEIJING)
                return 200, _JSON, self.licences(moment, _int(query.get("limit"), 500, 1, _MAX_LIMIT))
            if url.path == "/reviews":
                cursor = _decode_cursor(query["cursor"]) if query.get("cursor") else None
                return 200, _JSON, self.reviews(cursor, _int(query.get("limit"), 100, 1, _MAX_LIMIT))
            if url.path == "/news.rss":
                body, etag, modified = self.news()
                validators = {"etag": etag, "last-modified": modified}
                if headers.get("if-none-match") == etag:
                    return 304, validators, b""
                return 200, {"content-type": "application/rss+xml; charset=utf-8", **validators}, body
        except ValueError as exc:
            return 400, {"content-type": "text/plain; charset=utf-8"}, f"{exc}\n".encode()
        return 404, {"content-type": "text/plain; charset=utf-8"}, b"not found\n"

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the provider is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def serve(self, port: int = 0) -> None:
        """Listen on 127.0.0.1 (port 0: any free port) in a daemon thread."""
        provider = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    status, extra, body = provider.answer(self.path, headers)
                except Exception:
                    log.exception("demo provider: %s failed", self.path)
                    status, extra, body = 500, {"content-type": "text/plain"}, b"internal error\n"
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("demo provider: " + format, *args)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="demo-provider", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def start(shops: list[ProviderShop], seed: int, **options: Any) -> Provider:
    provider = Provider(shops, seed, **options)
    provider.serve()
    return provider


_JSON = {"content-type": "application/json; charset=utf-8"}


def _num(value: float | None) -> str | float:
    return "" if value is None else value


def _csv(rows: list[list[str]], line_end: str = "\n") -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator=line_end).writerows(rows)
    return out.getvalue()


def _zip(files: dict[str, str]) -> bytes:
    """A zip with fixed member times, so the same content gives the same bytes (and digest)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in files.items():
            archive.writestr(
                zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), text.encode(), zipfile.ZIP_DEFLATED
            )
    return out.getvalue()


def _int(text: str | None, default: int, low: int, high: int) -> int:
    if text is None:
        return default
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{value} is not between {low} and {high}")
    return value


def _cursor(bucket: int, index: int) -> str:
    return base64.urlsafe_b64encode(f"{bucket}:{index}".encode()).decode().rstrip("=")


def _decode_cursor(text: str) -> tuple[int, int]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        bucket, index = raw.split(":")
        return int(bucket), int(index)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError(f"not a cursor: {text[:40]!r}") from None
