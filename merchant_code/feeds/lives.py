"""LIVES inspections (Local Inspector Value-Entry Specification): the multi-file set and the
flattened single-file variant.

The body decides how it is read, not `Config.variant` (which only records what the operator
expects): a zip is the multi-file set, its members found by base name in any folder and any case
(a zip with no `inspections.csv` but a single CSV is read as that CSV); anything else is one plain
CSV whose header decides: `inspection_date` -> flattened, `business_id` + `date` ->
`inspections.csv` alone (no violations), `business_id` + `name` -> `businesses.csv` alone.
`legend.csv` is not used: scores are kept only within 0-100 whatever the legend says.

Inspection ids: the multi-file form has none and real feeds list several inspections of one
business on one day, so the id is `business_id|YYYY-MM-DD|n`, n numbering that business's
inspections of that day in file order (1 for the first). The flattened variant uses
`inspection_id` when it has one; without it, all rows of one business and day are one inspection
(those rows are its violations), id `business_id|YYYY-MM-DD|1`.
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
    ShopRecord,
    Violation,
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


def parse(page: Page, config: Config) -> Parsed:
    body = page.body
    if body[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        files = _unzip(body)
        if "inspections.csv" in files:
            return _parse_multi(files, config)
        if len(files) == 1:
            return _parse_plain(next(iter(files.values())), config)
        raise FeedError("the zip holds no inspections.csv")
    return _parse_plain(body, config)


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
    """The row's violation, None for a "no violation" marker, or why it cannot be used."""
    code, description = row.get(prefix + "code"), row.get(prefix + "description")
    if _no_violation(code, description):
        return None
    if code is None:
        return f"{name}: violation without a code"
    critical_text = row.get(prefix + "critical")
    critical = _CRITICAL.get(_words(critical_text)) if critical_text else None
    return Violation(code=code, description=description or "", critical=critical)


def _inspection(
    row: _Row,
    external_id: str,
    business_id: str,
    day: datetime.date,
    prefix: str,
    updated_at: datetime.datetime | None,
) -> InspectionRecord:
    result_text, description = row.get(prefix + "result"), row.get(prefix + "description")
    result = _RESULTS.get(_words(result_text)) if result_text else None
    if result is None and result_text is not None:  # keep what the feed said
        description = result_text if description is None else f"{result_text}; {description}"
    return InspectionRecord(
        external_id=external_id,
        match=Match(business_id=business_id),
        inspected_on=day,
        result=result,
        score=_number(row.get(prefix + "score"), 0, 100),
        kind=_kind(row.get(prefix + "type")),
        description=description,
        updated_at=updated_at,
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


def _feed_date(data: bytes | None, config: Config, rejects: list[Reject]) -> datetime.datetime | None:
    if data is None:
        return None
    _, rows = _table(data, "feed_info.csv", rejects)
    for row in rows:
        day = _date(row.get("feed_date"), config, "feed_date")
        if isinstance(day, str):
            rejects.append(Reject(row.raw, f"feed_info.csv: {day}"))
            continue
        return datetime.datetime.combine(day, datetime.time(), ZoneInfo(config.timezone))
    return None


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


def _inspections(
    data: bytes,
    config: Config,
    rejects: list[Reject],
    violations: dict[tuple[str, datetime.date], list[_Found]],
    updated_at: datetime.datetime | None,
) -> list[Record]:
    columns, rows = _table(data, "inspections.csv", rejects)
    _require(columns, "inspections.csv", "business_id", "date")
    records: list[Record] = []
    same_day: dict[tuple[str, datetime.date], int] = {}
    for row in rows:
        key = _key_of(row, config, "inspections.csv", "date")
        if isinstance(key, Reject):
            rejects.append(key)
            continue
        n = same_day[key] = same_day.get(key, 0) + 1
        external_id = f"{key[0]}|{key[1].isoformat()}|{n}"
        record = _inspection(row, external_id, key[0], key[1], "", updated_at)
        # violations name only (business_id, date): with several inspections that day they
        # cannot be told apart, so all of them go to the first one of the day
        if n == 1 and key in violations:
            found = violations.pop(key)
            record = msgspec.structs.replace(record, violations=tuple(f.violation for f in found))
        records.append(record)
    for key, found in violations.items():
        for item in found:
            reason = "violations.csv: no inspection of that business that day"
            rejects.append(Reject(item.raw, reason, key[0]))
    return records


def _parse_multi(files: dict[str, bytes], config: Config) -> Parsed:
    rejects: list[Reject] = []
    updated_at = _feed_date(files.get("feed_info.csv"), config, rejects)
    records = _shops(files["businesses.csv"], rejects) if "businesses.csv" in files else []
    violations = _violations(files.get("violations.csv"), config, rejects)
    records += _inspections(files["inspections.csv"], config, rejects, violations, updated_at)
    return Parsed(records=records, rejects=rejects)


def _parse_plain(data: bytes, config: Config) -> Parsed:
    first_line = data.find(b"\n")
    columns, _ = _table(data if first_line < 0 else data[:first_line], "CSV", [])
    if "inspection_date" in columns:
        return _parse_flat(data, config)
    if "business_id" in columns and "date" in columns:
        return _parse_multi({"inspections.csv": data}, config)
    if "business_id" in columns and "name" in columns:
        rejects: list[Reject] = []
        return Parsed(records=_shops(data, rejects), rejects=rejects)
    raise FeedError("a CSV that is neither a LIVES file nor the flattened variant")


def _parse_flat(data: bytes, config: Config) -> Parsed:
    rejects: list[Reject] = []
    columns, rows = _table(data, "flattened CSV", rejects)
    _require(columns, "flattened CSV", "business_id", "inspection_date")
    shops: dict[str, Record] = {}
    inspections: dict[str, tuple[InspectionRecord, list[Violation]]] = {}
    for row in rows:
        key = _key_of(row, config, "flattened CSV", "inspection_date")
        if isinstance(key, Reject):
            rejects.append(key)
            continue
        business_id, day = key
        external_id = row.get("inspection_id") or f"{business_id}|{day.isoformat()}|1"
        entry = inspections.get(external_id)
        if entry is None:
            record = _inspection(row, external_id, business_id, day, "inspection_", None)
            entry = inspections[external_id] = (record, [])
        elif entry[0].match.business_id != business_id or entry[0].inspected_on != day:
            reason = "flattened CSV: inspection_id names another inspection"
            rejects.append(Reject(row.raw, reason, business_id))
            continue
        if business_id not in shops:
            shops[business_id] = _shop(business_id, row.get, "business_")
        violation = _violation(row, "violation_", "flattened CSV")
        if isinstance(violation, str):
            rejects.append(Reject(row.raw, violation, business_id))
        elif violation is not None:
            entry[1].append(violation)
    records = list(shops.values())
    for record, found in inspections.values():
        records.append(msgspec.structs.replace(record, violations=tuple(found)) if found else record)
    return Parsed(records=records, rejects=rejects)
