"""LIVES inspections (Local Inspector Value-Entry Specification): the multi-file set and the
flattened single-file variant.

The body decides how it is read, not `Config.variant` (which only records what the operator
expects): a zip is the multi-file set, its members found by base name in any folder and any case
(a zip with no `inspections.csv` but one data CSV, beside `feed_info.csv` and `legend.csv` or
alone, is read as that CSV); anything else is one plain CSV whose header (in any case and order)
decides: `inspection_date` -> flattened, `business_id` + `date` -> `inspections.csv` alone (no
violations), `business_id` + `name` -> `businesses.csv` alone.

Scores keep their scale: the source's `score_scale`, else `feed_info.csv`'s `scoring_method`
(graded: 0-100, cumulative: demerit points, lower is better; unscored: no score), else LIVES'
0-100. A result the feed does not state is derived from the score only through `legend.csv`
ranges whose description is a result (pass, conditional pass, fail, ...); otherwise it is unknown.

Inspection ids: the multi-file form has none and real feeds list several inspections of one
business on one day, so the id is `business_id|YYYY-MM-DD|n`, n numbering that business's
inspections of that day by content (type, then score, result and description), never by row
order. The flattened variant uses `inspection_id` when it has one; without it, all rows of one
business and day are one inspection (those rows are its violations), id
`business_id|YYYY-MM-DD|1`. Every inspection carries its content key (base.content_key); with
`unstable_ids` (a publisher whose inspection_id is a row counter) the content key is its id.
"""

from __future__ import annotations

import csv
import datetime
import functools
import hashlib
import io
import lzma
import math
import zipfile
import zlib
from collections.abc import Callable, Iterator
from typing import Literal, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
import msgspec

from merchant_code.feeds import limits as feed_limits
from merchant_code.feeds import unzip
from merchant_code.feeds.base import (
    FeedError,
    InspectionRecord,
    Match,
    Page,
    Parsed,
    Record,
    Reject,
    ScoreScale,
    ShopRecord,
    Violation,
    by_content,
    content_key,
)

KIND = "lives"


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    url: str
    variant: Literal["multi", "flat"] = "multi"
    # the zone of the feed's dates: feed_date becomes updated_at at its midnight, and a flattened
    # timestamp with an offset is converted to this zone before its date is taken
    timezone: str = "Asia/Shanghai"
    # inspections dated before this are placeholders (1900-01-01 always is)
    min_date: datetime.date = datetime.date(2000, 1, 1)
    # the publisher's inspection_id is a row counter: inspections are keyed by their content
    unstable_ids: bool = False
    # what the feed's scores mean, when feed_info.csv does not say (or says it wrongly)
    score_scale: ScoreScale | None = None

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {self.timezone!r}") from exc


async def fetch(client: httpx.AsyncClient, config: Config, cursor: str | None) -> Page:
    """One GET of the whole feed. LIVES is a snapshot at a stable URL, so there is no position to
    resume from: the cursor is the body's digest (feed_version is not trusted to change with the
    content), and the runner recognises an unchanged feed by comparing it with the stored one."""
    response = await client.get(config.url)
    response.raise_for_status()
    body = response.content
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    return Page(body=body, content_type=response.headers.get("content-type"), next_cursor=digest)


_ABOUT_THE_FEED = ("feed_info.csv", "legend.csv")


def parse(page: Page, config: Config) -> Parsed:
    body = page.body
    if body[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        files = _unzip(body)
        if "inspections.csv" in files:
            parsed = _parse_multi(files, config)
        else:
            data = [name for name in files if name not in _ABOUT_THE_FEED]
            # businesses.csv or violations.csv without inspections.csv is a multi-file set
            # missing its main file; any other single CSV is the flattened file or the
            # inspections under another name
            if len(data) != 1 or data[0] in ("businesses.csv", "violations.csv"):
                raise FeedError("the zip holds no inspections.csv")
            parsed = _parse_plain(files[data[0]], config, files)
    else:
        parsed = _parse_plain(body, config, {})
    if not config.unstable_ids:
        return parsed
    inspections = by_content([r for r in parsed.records if isinstance(r, InspectionRecord)])
    others = [r for r in parsed.records if not isinstance(r, InspectionRecord)]
    return Parsed(records=[*others, *inspections], rejects=parsed.rejects)


# --- reading CSV bytes: every row keeps its raw bytes, a bad row is a Reject -----------------

_PLACEHOLDERS = frozenset({"", "null", "none", "n/a", "nan"})
_BOM = b"\xef\xbb\xbf"
# the csv module refuses a field longer than this (131,072 characters): such a row is a Reject
_FIELD_LIMIT = csv.field_size_limit()


class _Row(NamedTuple):
    raw: bytes
    cells: list[str]
    columns: dict[str, int]

    def get(self, name: str) -> str | None:
        index = self.columns.get(name)
        if index is None:
            return None
        value = self.cells[index].strip()
        return None if value.lower() in _PLACEHOLDERS else value


def _lines(data: bytes) -> Iterator[tuple[bytes, bool]]:
    """Records as raw bytes (line end removed) and whether their quotes are balanced. A quoted
    field may span lines; `"` never occurs inside a multi-byte UTF-8 sequence, so quotes can be
    counted before decoding. A line with an odd number of quotes runs to the next such line; when
    there is none the quote never closes and only its own line is given up."""
    lines = data.split(b"\n")
    odd = [i for i, line in enumerate(lines) if line.count(b'"') & 1]
    pending = 0  # odd[pending] is the next line with an odd number of quotes
    i = 0
    while i < len(lines):
        stop, balanced = i + 1, True
        if pending < len(odd) and odd[pending] == i:
            if pending + 1 < len(odd):
                stop = odd[pending + 1] + 1
                pending += 2
            else:
                balanced = False
                pending += 1
        yield b"\n".join(lines[i:stop]).rstrip(b"\r"), balanced
        i = stop


def _cells(raw: bytes, balanced: bool) -> list[str] | str:
    """The row's cells, or why it cannot be read."""
    if not balanced:
        return "unterminated quoted field"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"invalid UTF-8 at byte {exc.start}"
    if len(text) <= _FIELD_LIMIT and '"' not in text and "\r" not in text and "\x00" not in text:
        return text.split(",")  # what the csv module gives for a row with nothing to unquote
    try:
        rows = list(csv.reader([text]))
    except csv.Error as exc:
        return f"unreadable CSV row: {exc}"
    return rows[0] if len(rows) == 1 else "unreadable CSV row"


def _table(data: bytes, name: str, rejects: list[Reject]) -> tuple[dict[str, int], list[_Row]]:
    lines = _lines(data.removeprefix(_BOM))
    header: list[str] | str = "empty file"
    for raw, balanced in lines:
        if raw.strip():
            header = _cells(raw, balanced)
            break
    if isinstance(header, str):
        raise FeedError(f"{name}: no readable header ({header})")
    columns: dict[str, int] = {}
    for index, title in enumerate(header):
        columns.setdefault(title.strip().removeprefix("\ufeff").lower(), index)
    rows: list[_Row] = []
    for raw, balanced in lines:
        if not raw.strip():
            continue  # a blank line carries nothing
        cells = _cells(raw, balanced)
        if isinstance(cells, list) and len(cells) != len(header):
            cells = f"expected {len(header)} columns, got {len(cells)}"
        if isinstance(cells, str):
            rejects.append(Reject(raw, f"{name}: {cells}"))
        else:
            rows.append(_Row(raw, cells, columns))
    return columns, rows


def _require(columns: dict[str, int], name: str, *required: str) -> None:
    missing = [title for title in required if title not in columns]
    if missing:
        raise FeedError(f"{name}: no column {', '.join(missing)}")


def _unzip(body: bytes) -> dict[str, bytes]:
    """The CSV members by base name, unpacked within the source's limits (see unzip.py)."""
    files: dict[str, bytes] = {}
    limits = feed_limits.current()
    left = limits.max_bytes
    try:
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            for info in archive.infolist():
                path = info.filename.replace("\\", "/")
                name = path.rsplit("/", 1)[-1].lower()
                # macOS archives carry `__MACOSX/._name` resource forks next to the real files
                if info.is_dir() or not name.endswith(".csv") or name.startswith("._"):
                    continue
                if name in files:
                    raise FeedError(f"the zip holds two {name}")
                files[name] = unzip.read(body, info, left, limits)
                left -= len(files[name])
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, OverflowError) as exc:
        raise FeedError(f"unreadable zip: {exc}") from exc
    # members are read by unzip.read, which says FeedError; these are for a damaged directory
    except (NotImplementedError, RuntimeError, KeyError, UnicodeDecodeError, lzma.LZMAError) as exc:
        raise FeedError(f"unreadable zip: {exc!r}") from exc
    return files


# --- values ------------------------------------------------------------------------------------

_PLACEHOLDER_DAY = datetime.date(1900, 1, 1)


def _short(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _date(text: str | None, config: Config, column: str = "date") -> datetime.date | str:
    """The date, or why the row cannot be used."""
    if text is None:
        return f"no {column}"
    try:
        if len(text) == 8 and text.isascii() and text.isdigit():
            day = datetime.date(int(text[:4]), int(text[4:6]), int(text[6:]))
        elif len(text) == 10:
            day = datetime.date.fromisoformat(text.replace("/", "-"))
        else:
            moment = datetime.datetime.fromisoformat(text)
            if moment.tzinfo is not None:
                moment = moment.astimezone(ZoneInfo(config.timezone))
            day = moment.date()
    except (ValueError, OverflowError):  # OverflowError: the zone change leaves years 1-9999
        return f"invalid {column} {_short(text)}"
    if day <= _PLACEHOLDER_DAY:
        return f"placeholder {column} {day.isoformat()}"
    if day < config.min_date:
        return f"{column} {day.isoformat()} before min_date {config.min_date.isoformat()}"
    return day


def _number(text: str | None, low: float, high: float) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and low <= value <= high else None


@functools.lru_cache(maxsize=4096)  # results, types and flags repeat on every row
def _words(text: str) -> str:
    return " ".join(text.lower().replace("_", " ").replace("-", " ").split())


_RESULTS: dict[str, Literal["pass", "rectify", "fail"]] = {
    **dict.fromkeys(("pass", "passed", "合格", "通过"), "pass"),
    **dict.fromkeys(
        ("conditional", "conditional pass", "conditionally passed", "pass with conditions"), "rectify"
    ),
    **dict.fromkeys(("rectify", "rectification", "限期整改", "责令整改"), "rectify"),
    **dict.fromkeys(("fail", "failed", "closed", "closure", "不合格"), "fail"),
}
_Kind = Literal["routine", "follow_up", "complaint", "special", "licensing"]
# tried in order on the normalised `type`: "Complaint Reinspection/Followup" is a follow-up
_KINDS: tuple[tuple[str, _Kind], ...] = (
    ("follow", "follow_up"),
    ("reinspect", "follow_up"),
    ("re inspect", "follow_up"),
    ("复查", "follow_up"),
    ("complaint", "complaint"),
    ("投诉", "complaint"),
    ("routine", "routine"),
    ("日常", "routine"),
    ("special", "special"),
    ("专项", "special"),
    ("licens", "licensing"),
    ("new ownership", "licensing"),
    ("许可", "licensing"),
)
_CRITICAL = {
    **dict.fromkeys(("y", "yes", "true", "1", "critical", "high", "major", "严重", "是"), True),
    **dict.fromkeys(("n", "no", "false", "0", "not critical", "non critical", "low", "minor", "否"), False),
}


@functools.lru_cache(maxsize=4096)  # a feed uses a handful of types on every row
def _kind(text: str | None) -> _Kind | None:
    words = _words(text) if text else ""
    return next((kind for key, kind in _KINDS if key in words), None) if words else None


def _no_violation(code: str | None, description: str | None) -> bool:
    """The markers feeds use for "nothing found": code `NO`, or no code and no finding."""
    if description is not None and " ".join(description[:40].lower().split()).startswith(
        ("no violation", "无违规")
    ):
        return True
    return (code is not None and code.upper() == "NO") or (code is None and description is None)


# --- what the feed says about itself: its date, its scores' scale, its legend ------------------

_SCORING_METHODS: dict[str, ScoreScale | None] = {
    "graded": "lives_0_100",
    "cumulative": "demerit_points",
    "unscored": None,
}
# the highest score each scale can give (numeric(5, 1) holds up to 9999.9)
_HIGHEST: dict[ScoreScale, float] = {"lives_0_100": 100, "fhrs_points": 9999, "demerit_points": 9999}


class _Feed(NamedTuple):
    updated_at: datetime.datetime | None
    scale: ScoreScale | None  # None: the feed is unscored, its scores are not kept
    # (lowest, highest, result) from legend.csv, only ranges whose description is a result
    legend: tuple[tuple[float, float, Literal["pass", "rectify", "fail"]], ...] = ()


def _feed(files: dict[str, bytes], config: Config, rejects: list[Reject]) -> _Feed:
    updated_at, method = None, None
    if "feed_info.csv" in files:
        _, rows = _table(files["feed_info.csv"], "feed_info.csv", rejects)
        for row in rows[:1]:
            method = row.get("scoring_method")
            day = _date(row.get("feed_date"), config, "feed_date")
            if isinstance(day, str):
                rejects.append(Reject(row.raw, f"feed_info.csv: {day}"))
            else:
                updated_at = datetime.datetime.combine(day, datetime.time(), ZoneInfo(config.timezone))
    scale: ScoreScale | None = "lives_0_100"
    if config.score_scale is not None:
        scale = config.score_scale
    elif method is not None and _words(method) in _SCORING_METHODS:
        scale = _SCORING_METHODS[_words(method)]
    legend = _legend(files["legend.csv"], rejects) if "legend.csv" in files and scale else ()
    return _Feed(updated_at, scale, legend)


def _legend(
    data: bytes, rejects: list[Reject]
) -> tuple[tuple[float, float, Literal["pass", "rectify", "fail"]], ...]:
    columns, rows = _table(data, "legend.csv", rejects)
    _require(columns, "legend.csv", "minimum_score", "maximum_score", "description")
    ranges = []
    for row in rows:
        low = _number(row.get("minimum_score"), -math.inf, math.inf)
        high = _number(row.get("maximum_score"), -math.inf, math.inf)
        description = row.get("description")
        if low is None or high is None or description is None or low > high:
            rejects.append(Reject(row.raw, "legend.csv: a range needs two scores and a description"))
            continue
        result = _RESULTS.get(_words(description))
        if result is not None:  # "Good" or "Needs improvement" says no result: none is invented
            ranges.append((low, high, result))
    return tuple(ranges)


def _derived(score: float | None, feed: _Feed) -> Literal["pass", "rectify", "fail"] | None:
    if score is None:
        return None
    return next((result for low, high, result in feed.legend if low <= score <= high), None)


# --- records -----------------------------------------------------------------------------------


def _shop(business_id: str, get: Callable[[str], str | None], prefix: str) -> ShopRecord:
    lat = _number(get(prefix + "latitude"), -90, 90)
    lon = _number(get(prefix + "longitude"), -180, 180)
    if lat is None or lon is None or (lat == 0 and lon == 0):  # 0,0 is "not geocoded"
        lat = lon = None
    phone = get(prefix + "phone_number") or get(prefix + "phone")
    match = Match(
        business_id=business_id,
        name=get(prefix + "name"),
        address=get(prefix + "address"),
        postal_code=get(prefix + "postal_code"),
        lat=lat,
        lon=lon,
        phone=phone,
    )
    return ShopRecord(external_id=business_id, match=match)


class _Found(NamedTuple):
    raw: bytes
    violation: Violation


def _violation(row: _Row, prefix: str, name: str) -> Violation | str | None:
    """The row's violation, None for a "no violation" marker, or why it cannot be used. Without a
    `critical` value the violation's criticality is unknown (None), not "not critical"."""
    code, description = row.get(prefix + "code"), row.get(prefix + "description")
    if _no_violation(code, description):
        return None
    if code is None:
        return f"{name}: violation without a code"
    critical_text = row.get(prefix + "critical")
    critical = _CRITICAL.get(_words(critical_text)) if critical_text else None
    return Violation(code=code, description=description or "", critical=critical)


def _sorted(violations: list[Violation]) -> tuple[Violation, ...]:
    """In one order whatever the rows' order, so a re-sorted feed stores the same inspection."""
    if len(violations) < 2:
        return tuple(violations)
    return tuple(
        sorted(violations, key=lambda v: (v.code or "", v.description, v.critical is None, v.critical))
    )


class _Values(NamedTuple):
    """An inspection's own values as one row gives them (the flattened variant repeats them on
    each of its violation rows)."""

    score: str | None
    result: str | None
    type: str | None
    description: str | None

    def rank(self) -> tuple[int, tuple[str, ...]]:
        """Which row's values an inspection keeps: the most complete, then the greatest, so the
        rows' order never decides."""
        return (sum(v is not None for v in self), tuple(v or "" for v in self))


def _values(row: _Row, prefix: str) -> _Values:
    get = row.get
    return _Values(
        get(prefix + "score"), get(prefix + "result"), get(prefix + "type"), get(prefix + "description")
    )


def _inspection(
    values: _Values,
    external_id: str,
    business_id: str,
    day: datetime.date,
    feed: _Feed,
    violations: tuple[Violation, ...] = (),
) -> InspectionRecord:
    result_text, description = values.result, values.description
    result = _RESULTS.get(_words(result_text)) if result_text else None
    if result is None and result_text is not None:  # keep what the feed said
        description = result_text if description is None else f"{result_text}; {description}"
    scale = feed.scale
    score = _number(values.score, 0, _HIGHEST[scale]) if scale is not None else None
    if result is None and result_text is None:
        result = _derived(score, feed)
    kind = _kind(values.type)
    return InspectionRecord(
        external_id=external_id,
        match=Match(business_id=business_id),
        inspected_on=day,
        result=result,
        score=score,
        score_scale=scale if score is not None else None,
        kind=kind,
        description=description,
        violations=violations,
        updated_at=feed.updated_at,
        content_key=content_key(
            business_id,
            day,
            _words(values.type) if values.type else None,
            score,
            [v.code or "" for v in violations],
        ),
    )


def _key_of(row: _Row, config: Config, name: str, column: str) -> tuple[str, datetime.date] | Reject:
    business_id = row.get("business_id")
    if business_id is None:
        return Reject(row.raw, f"{name}: no business_id")
    day = _date(row.get(column), config, column)
    if isinstance(day, str):
        return Reject(row.raw, f"{name}: {day}", external_id=business_id)
    return business_id, day


def _shops(data: bytes, rejects: list[Reject]) -> list[Record]:
    columns, rows = _table(data, "businesses.csv", rejects)
    _require(columns, "businesses.csv", "business_id")
    shops: dict[str, Record] = {}
    for row in rows:
        business_id = row.get("business_id")
        if business_id is None:
            rejects.append(Reject(row.raw, "businesses.csv: no business_id"))
        elif business_id in shops:  # one batch may not upsert one key twice
            rejects.append(Reject(row.raw, "businesses.csv: duplicate business_id", business_id))
        else:
            shops[business_id] = _shop(business_id, row.get, "")
    return list(shops.values())


def _violations(
    data: bytes | None, config: Config, rejects: list[Reject]
) -> dict[tuple[str, datetime.date], list[_Found]]:
    found: dict[tuple[str, datetime.date], list[_Found]] = {}
    if data is None:
        return found
    columns, rows = _table(data, "violations.csv", rejects)
    _require(columns, "violations.csv", "business_id", "date")
    for row in rows:
        key = _key_of(row, config, "violations.csv", "date")
        if isinstance(key, Reject):
            rejects.append(key)
            continue
        violation = _violation(row, "", "violations.csv")
        if isinstance(violation, str):
            rejects.append(Reject(row.raw, violation, key[0]))
        elif violation is not None:
            found.setdefault(key, []).append(_Found(row.raw, violation))
    return found


_KIND_ORDER = {"routine": 0, "licensing": 1, "special": 2, "complaint": 3, "follow_up": 4, None: 5}


def _day_order(values: _Values) -> tuple[int, bool, float, tuple[str, ...]]:
    """Same-day inspections in the order a day runs (a routine visit before its follow-up), then
    by score, then by the rest of their values: never by the rows' order."""
    score = _number(values.score, -math.inf, math.inf)
    return (_KIND_ORDER[_kind(values.type)], score is None, -(score or 0.0), values.rank()[1])


def _inspections(
    data: bytes,
    config: Config,
    feed: _Feed,
    rejects: list[Reject],
    violations: dict[tuple[str, datetime.date], list[_Found]],
) -> list[InspectionRecord]:
    columns, rows = _table(data, "inspections.csv", rejects)
    _require(columns, "inspections.csv", "business_id", "date")
    keyed: list[tuple[tuple[str, datetime.date], _Row]] = []
    same_day: dict[tuple[str, datetime.date], int] = {}
    for row in rows:
        key = _key_of(row, config, "inspections.csv", "date")
        if isinstance(key, Reject):
            rejects.append(key)
            continue
        same_day[key] = same_day.get(key, 0) + 1
        keyed.append((key, row))
    records: list[InspectionRecord | None] = []
    # days with several inspections of one business: their places in `records`, numbered later
    shared: dict[tuple[str, datetime.date], list[tuple[int, _Values]]] = {}
    for key, row in keyed:
        values = _values(row, "")
        if same_day[key] == 1:
            found = violations.pop(key, None)
            external_id = f"{key[0]}|{key[1].isoformat()}|1"
            records.append(_inspection(values, external_id, key[0], key[1], feed, _found(found)))
        else:
            shared.setdefault(key, []).append((len(records), values))
            records.append(None)
    for key, places in shared.items():
        ordered = sorted((values for _, values in places), key=_day_order)
        # violations name only (business_id, date): with several inspections that day they
        # cannot be told apart, so all of them go to the first one of the day
        found = violations.pop(key, None)
        for n, ((at, _), values) in enumerate(zip(places, ordered, strict=True), 1):
            external_id = f"{key[0]}|{key[1].isoformat()}|{n}"
            records[at] = _inspection(
                values, external_id, key[0], key[1], feed, _found(found) if n == 1 else ()
            )
    for key, orphans in violations.items():
        for item in orphans:
            reason = "violations.csv: no inspection of that business that day"
            rejects.append(Reject(item.raw, reason, key[0]))
    return [r for r in records if r is not None]


def _found(found: list[_Found] | None) -> tuple[Violation, ...]:
    return _sorted([f.violation for f in found]) if found else ()


def _parse_multi(files: dict[str, bytes], config: Config) -> Parsed:
    rejects: list[Reject] = []
    feed = _feed(files, config, rejects)
    records = _shops(files["businesses.csv"], rejects) if "businesses.csv" in files else []
    violations = _violations(files.get("violations.csv"), config, rejects)
    records += _inspections(files["inspections.csv"], config, feed, rejects, violations)
    return Parsed(records=records, rejects=rejects)


def _parse_plain(data: bytes, config: Config, files: dict[str, bytes]) -> Parsed:
    """One data CSV; `files` may add the zip's feed_info.csv and legend.csv."""
    first_line = data.find(b"\n")
    columns, _ = _table(data if first_line < 0 else data[:first_line], "CSV", [])
    about = {name: files[name] for name in _ABOUT_THE_FEED if name in files}
    if "inspection_date" in columns:
        return _parse_flat(data, config, about)
    if "business_id" in columns and "date" in columns:
        return _parse_multi({**about, "inspections.csv": data}, config)
    if "business_id" in columns and "name" in columns:
        rejects: list[Reject] = []
        return Parsed(records=_shops(data, rejects), rejects=rejects)
    raise FeedError("a CSV that is neither a LIVES file nor the flattened variant")


class _Visit(NamedTuple):
    business_id: str
    day: datetime.date
    values: _Values
    violations: list[Violation]


def _parse_flat(data: bytes, config: Config, about: dict[str, bytes]) -> Parsed:
    rejects: list[Reject] = []
    feed = _feed(about, config, rejects)
    columns, rows = _table(data, "flattened CSV", rejects)
    _require(columns, "flattened CSV", "business_id", "inspection_date")
    shops: dict[str, Record] = {}
    visits: dict[str, _Visit] = {}
    for row in rows:
        key = _key_of(row, config, "flattened CSV", "inspection_date")
        if isinstance(key, Reject):
            rejects.append(key)
            continue
        business_id, day = key
        external_id = row.get("inspection_id") or f"{business_id}|{day.isoformat()}|1"
        values = _values(row, "inspection_")
        visit = visits.get(external_id)
        if visit is None:
            visit = visits[external_id] = _Visit(business_id, day, values, [])
        elif visit.business_id != business_id or visit.day != day:
            reason = "flattened CSV: inspection_id names another inspection"
            rejects.append(Reject(row.raw, reason, business_id))
            continue
        elif values != visit.values and values.rank() > visit.values.rank():
            visits[external_id] = visit = visit._replace(values=values)
        if business_id not in shops:
            shops[business_id] = _shop(business_id, row.get, "business_")
        violation = _violation(row, "violation_", "flattened CSV")
        if isinstance(violation, str):
            rejects.append(Reject(row.raw, violation, business_id))
        elif violation is not None:
            visit.violations.append(violation)
    records = list(shops.values())
    for external_id, v in visits.items():
        records.append(_inspection(v.values, external_id, v.business_id, v.day, feed, _sorted(v.violations)))
    return Parsed(records=records, rejects=rejects)
