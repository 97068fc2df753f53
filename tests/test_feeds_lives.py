"""LIVES parsing on recorded-style payloads (tests/fixtures/feeds/lives): pure, no database."""

from __future__ import annotations

import datetime
import hashlib
import io
import random
import zipfile
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import msgspec
import pytest

from merchant_code.feeds import lives
from merchant_code.feeds.base import (
    FeedError,
    InspectionRecord,
    Match,
    Page,
    Parsed,
    Reject,
    ShopRecord,
    Violation,
)

FIXTURES = Path(__file__).parent / "fixtures" / "feeds" / "lives"
CONFIG = lives.Config(url="http://127.0.0.1:8123/lives.zip")
FEED_DATE = datetime.datetime(2023, 10, 1, tzinfo=ZoneInfo("Asia/Shanghai"))
D = datetime.date


def multi_zip(folder: str = "putuo/") -> bytes:
    """The multi-file fixture zipped as a city publishes it (in a folder, as many do)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted((FIXTURES / "multi").iterdir()):
            archive.writestr(folder + path.name, path.read_bytes())
    return buffer.getvalue()


def parse(page: Page, config: lives.Config) -> Parsed:
    """lives.parse with the content keys left out (tests/test_feeds_identity.py covers them)."""
    parsed = lives.parse(page, config)
    records = [
        msgspec.structs.replace(r, content_key=None) if isinstance(r, InspectionRecord) else r
        for r in parsed.records
    ]
    return Parsed(records=records, rejects=parsed.rejects)


def inspection(
    external_id: str, day: datetime.date, business_id: str | None = None, **fields: object
) -> InspectionRecord:
    if fields.get("score") is not None:
        fields.setdefault("score_scale", "lives_0_100")
    return InspectionRecord(
        external_id=external_id,
        match=Match(business_id=business_id or external_id.split("|")[0]),
        inspected_on=day,
        **fields,  # type: ignore[arg-type]
    )


def shop(business_id: str, **fields: object) -> ShopRecord:
    return ShopRecord(external_id=business_id, match=Match(business_id=business_id, **fields))  # type: ignore[arg-type]


MULTI_RECORDS = [
    shop(
        "B1001",
        name="老王面馆",
        address="中山北路 100 号, 1 楼",
        postal_code="200070",
        lat=31.2401,
        lon=121.4552,
        phone="021-5555-0101",
    ),
    # leading and trailing spaces around every value
    shop(
        "B1002",
        name="Golden Dumpling House",
        address="88 Changshou Rd",
        postal_code="200060",
        lat=31.239,
        lon=121.44,
    ),
    # NULL postal code, 0,0 coordinates and a "None" phone are unknowns
    shop("B1003", name="Sunrise Bakery", address="12 Xikang Rd"),
    # two inspections on one day: numbered in file order, the day's violations on the first
    inspection(
        "B1001|2023-03-14|1",
        D(2023, 3, 14),
        result="pass",
        score=92.0,
        kind="routine",
        violations=(
            Violation(code="101", description="Food held at unsafe temperature", critical=True),
            Violation(code="102", description="Hand-washing sink blocked, no soap", critical=False),
        ),
        updated_at=FEED_DATE,
    ),
    inspection(
        "B1001|2023-03-14|2",
        D(2023, 3, 14),
        result="rectify",
        score=85.0,
        kind="follow_up",
        updated_at=FEED_DATE,
    ),
    # NULL score; the only violation row says "No violations"
    inspection("B1001|2023-06-01|1", D(2023, 6, 1), result="rectify", kind="follow_up", updated_at=FEED_DATE),
    # the `NO` code row is dropped, the real violation kept
    inspection(
        "B1002|2023-05-02|1",
        D(2023, 5, 2),
        result="fail",
        score=78.0,
        kind="complaint",
        violations=(Violation(code="201", description="Evidence of rodents", critical=True),),
        updated_at=FEED_DATE,
    ),
    # an ISO date among YYYYMMDD ones; "None" score; "Closed" is a fail
    inspection("B1002|2023-07-01|1", D(2023, 7, 1), result="fail", kind="licensing", updated_at=FEED_DATE),
    # a result the mapping does not know stays as text; an unknown type is no kind
    inspection("B1003|2023-08-15|1", D(2023, 8, 15), description="Pending review", updated_at=FEED_DATE),
    # a score of 105 cannot be
    inspection("B1001|2023-09-01|1", D(2023, 9, 1), result="pass", kind="routine", updated_at=FEED_DATE),
]

MULTI_REJECTS = [
    Reject(
        b"B1004,Tea Corner,5 Yanping Rd,Shanghai,SH,200040,31.23", "businesses.csv: expected 9 columns, got 7"
    ),
    Reject(
        b"B1005," + "张记小吃".encode("gbk") + b",7 Jiangning Rd,Shanghai,SH,200041,31.2350,121.4470,",
        "businesses.csv: invalid UTF-8 at byte 6",
    ),
    Reject(b",Nameless Stall,1 Nowhere Rd,Shanghai,SH,200000,,,", "businesses.csv: no business_id"),
    Reject(
        b"B1002,Golden Dumpling (old name),88 Changshou Rd,Shanghai,SH,200060,,,",
        "businesses.csv: duplicate business_id",
        "B1002",
    ),
    Reject(
        b"B1003,20230815,Expired licence displayed,,N", "violations.csv: violation without a code", "B1003"
    ),
    Reject(b"B1001,19000101,Placeholder,401,Y", "violations.csv: placeholder date 1900-01-01", "B1001"),
    Reject(b"B1004,20230910,,,,", "inspections.csv: expected 5 columns, got 6"),
    Reject(b"B1003,19000101,100,Pass,Routine", "inspections.csv: placeholder date 1900-01-01", "B1003"),
    Reject(
        b"B1003,19991231,90,Pass,Routine",
        "inspections.csv: date 1999-12-31 before min_date 2000-01-01",
        "B1003",
    ),
    Reject(b",20230101,90,Pass,Routine", "inspections.csv: no business_id"),
    Reject(b"B1002,2023-13-45,80,Pass,Routine", "inspections.csv: invalid date '2023-13-45'", "B1002"),
    Reject(
        b"B1009,20230101,Orphan violation,301,Y",
        "violations.csv: no inspection of that business that day",
        "B1009",
    ),
]


def test_the_fixtures_carry_the_byte_level_quirks() -> None:
    businesses = (FIXTURES / "multi" / "businesses.csv").read_bytes()
    assert businesses.startswith(b"\xef\xbb\xbf")
    assert b"\r\n" in businesses
    assert b"\r\n" in (FIXTURES / "multi" / "violations.csv").read_bytes()


def test_a_multi_file_zip_gives_every_shop_and_inspection_and_rejects_the_rest() -> None:
    parsed = parse(Page(multi_zip()), CONFIG)
    assert parsed.records == MULTI_RECORDS
    assert parsed.rejects == MULTI_REJECTS


def test_zip_members_are_found_at_the_top_level_too() -> None:
    parsed = parse(Page(multi_zip(folder="")), CONFIG)
    assert parsed.records == MULTI_RECORDS


def test_parsing_the_same_page_twice_gives_identical_output() -> None:
    page = Page(multi_zip())
    assert parse(page, CONFIG) == parse(page, CONFIG)
    flat = Page((FIXTURES / "flat.csv").read_bytes())
    assert parse(flat, CONFIG) == parse(flat, CONFIG)


def test_min_date_moves_the_placeholder_line() -> None:
    config = lives.Config(url=CONFIG.url, min_date=D(1990, 1, 1))
    parsed = parse(Page(multi_zip()), config)
    assert (
        inspection(
            "B1003|1999-12-31|1",
            D(1999, 12, 31),
            result="pass",
            score=90.0,
            kind="routine",
            updated_at=FEED_DATE,
        )
        in parsed.records
    )


def test_a_plain_inspections_csv_is_read_alone_and_its_violations_need_no_file() -> None:
    parsed = parse(Page((FIXTURES / "multi" / "inspections.csv").read_bytes()), CONFIG)
    expected = [
        msgspec.structs.replace(r, violations=(), updated_at=None)
        for r in MULTI_RECORDS
        if isinstance(r, InspectionRecord)
    ]
    assert parsed.records == expected
    assert [r.reason for r in parsed.rejects] == [
        r.reason for r in MULTI_REJECTS if r.reason.startswith("inspections.csv")
    ]


def test_only_the_required_inspection_columns_are_enough() -> None:
    parsed = parse(Page((FIXTURES / "inspections_minimal.csv").read_bytes()), CONFIG)
    assert parsed.records == [
        inspection("B1001|2023-03-14|1", D(2023, 3, 14), score=92.0),
        inspection("B1001|2023-03-14|2", D(2023, 3, 14)),
        inspection("B1002|2023-05-02|1", D(2023, 5, 2)),
    ]
    assert parsed.rejects == []


def test_a_plain_businesses_csv_gives_shops() -> None:
    parsed = parse(Page((FIXTURES / "multi" / "businesses.csv").read_bytes()), CONFIG)
    assert parsed.records == [r for r in MULTI_RECORDS if isinstance(r, ShopRecord)]
    assert len(parsed.rejects) == 4


def test_the_flattened_variant_groups_violation_rows_into_inspections() -> None:
    parsed = parse(Page((FIXTURES / "flat.csv").read_bytes()), CONFIG)
    assert parsed.records == [
        shop(
            "F200",
            name="Harbour Noodles",
            address="1 Bund Rd",
            postal_code="200002",
            lat=31.24,
            lon=121.49,
            phone="021-6666-0001",
        ),
        shop("F201", name="Lotus Cafe", address="9 Fuzhou Rd", postal_code="200001"),
        shop(
            "F202",
            name="Night Market Grill",
            address="3 Huanghe Rd",
            postal_code="200003",
            lat=31.236,
            lon=121.47,
        ),
        inspection(
            "I-9001",
            D(2023, 5, 14),
            "F200",
            result="pass",
            score=88.0,
            kind="routine",
            violations=(
                Violation(code="101", description="Floor dirty", critical=False),
                Violation(code="205", description='Raw meat stored above "ready-to-eat" food', critical=True),
            ),
        ),
        # same business, same day, its own inspection_id: a second inspection; `NO` is no violation
        inspection("I-9002", D(2023, 5, 14), "F200", result="fail", score=70.0, kind="complaint"),
        # no inspection_id: the rows of one business and day are one inspection, the first row's
        # values win (the second row's NULL score and `special` type are not used)
        inspection(
            "F201|2023-06-02|1",
            D(2023, 6, 2),
            result="pass",
            score=95.0,
            kind="follow_up",
            violations=(Violation(code="310", description="Pest control log missing"),),
        ),
        # 20:00 UTC is the next morning in Shanghai; "NULL" inspection_id is no id
        inspection(
            "F202|2023-07-10|1",
            D(2023, 7, 10),
            result="rectify",
            score=61.0,
            kind="special",
            violations=(Violation(code="402", description="No sneeze guard", critical=True),),
        ),
    ]
    assert [(r.reason, r.external_id) for r in parsed.rejects] == [
        ("flattened CSV: expected 17 columns, got 4", None),
        ("flattened CSV: placeholder inspection_date 1900-01-01", "F203"),
        ("flattened CSV: inspection_id names another inspection", "F204"),
    ]
    assert parsed.rejects[1].raw.startswith(b"F203,Old Tea House,")


def test_a_zip_holding_only_the_flattened_file_is_the_flattened_variant() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("export/Inspections_Flat.CSV", (FIXTURES / "flat.csv").read_bytes())
    flat = parse(Page((FIXTURES / "flat.csv").read_bytes()), CONFIG)
    assert parse(Page(buffer.getvalue()), lives.Config(url=CONFIG.url, variant="flat")) == flat


def test_a_quoted_field_may_span_lines_and_an_unclosed_quote_costs_only_its_line() -> None:
    body = (
        b"business_id,date,score,result,type\n"
        b'B1,20230101,90,"Pass",Routine\n'
        b'B2,20230102,80,"Conditional\r\nsee notes",Routine\r\n'
        b'B3,20230103,70,"Fail,Routine\n'
        b"B4,20230104,60,Fail,Routine\n"
    )
    parsed = parse(Page(body), CONFIG)
    assert [r.external_id for r in parsed.records] == [
        "B1|2023-01-01|1",
        "B2|2023-01-02|1",
        "B4|2023-01-04|1",
    ]
    assert parsed.records[1].description == "Conditional\r\nsee notes"  # type: ignore[union-attr]
    assert parsed.rejects == [
        Reject(b'B3,20230103,70,"Fail,Routine', "inspections.csv: unterminated quoted field")
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "no readable header"),
        (b"hello,world\n1,2\n", "neither a LIVES file"),
        (b"PK\x03\x04 truncated", "unreadable zip"),
        (b"\xff\xfe,\x00\n", "no readable header"),
    ],
)
def test_a_body_that_cannot_be_read_raises_feed_error(body: bytes, message: str) -> None:
    with pytest.raises(FeedError, match=message):
        parse(Page(body), CONFIG)


def test_a_zip_without_inspections_raises_feed_error() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("businesses.csv", (FIXTURES / "multi" / "businesses.csv").read_bytes())
        archive.writestr("feed_info.csv", (FIXTURES / "multi" / "feed_info.csv").read_bytes())
    with pytest.raises(FeedError, match=r"no inspections\.csv"):
        parse(Page(buffer.getvalue()), CONFIG)


def test_config_refuses_an_unknown_timezone_and_unknown_fields() -> None:
    with pytest.raises(msgspec.ValidationError, match="unknown timezone"):
        msgspec.convert({"url": "http://x", "timezone": "Mars/Olympus"}, lives.Config)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"url": "http://x", "variant": "multi", "extra": 1}, lives.Config)
    assert msgspec.convert({"url": "u", "min_date": "2010-01-01"}, lives.Config).min_date == D(2010, 1, 1)


async def test_fetch_gets_the_feed_once_and_its_cursor_recognises_an_unchanged_feed() -> None:
    body = multi_zip()
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=body, headers={"content-type": "application/zip"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        first = await lives.fetch(client, CONFIG, None)
        again = await lives.fetch(client, CONFIG, first.next_cursor)
    assert [str(r.url) for r in seen] == [CONFIG.url, CONFIG.url]
    assert first == Page(
        body=body,
        content_type="application/zip",
        next_cursor="sha256:" + hashlib.sha256(body).hexdigest(),
        last=True,
    )
    assert again.next_cursor == first.next_cursor


async def test_fetch_raises_on_an_error_status() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(503))
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.HTTPStatusError):
            await lives.fetch(client, CONFIG, None)


def mutate(data: bytes, rng: random.Random) -> bytes:
    choice = rng.randrange(4)
    at = rng.randrange(len(data) + 1)
    if choice == 0:  # truncated
        return data[:at]
    if choice == 1:  # random bytes replaced
        out = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(len(out))] = rng.randrange(256)
        return bytes(out)
    if choice == 2:  # invalid UTF-8 inserted
        return data[:at] + rng.choice([b"\xff", b"\xc3\x28", b"\xe2\x82", b"\xed\xa0\x80"]) + data[at:]
    return data[:at] + b"x" * 1_000_000 + data[at:]  # a 1 MB field


def zipped(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_random_mutations_give_records_and_rejects_or_feed_error_never_anything_else() -> None:
    rng = random.Random(20240501)
    members = {path.name: path.read_bytes() for path in sorted((FIXTURES / "multi").iterdir())}
    archive = zipped(members)
    flat = (FIXTURES / "flat.csv").read_bytes()
    outcomes = {"parsed": 0, "feed_error": 0}
    for _ in range(300):
        target = rng.randrange(3)
        if target == 0:  # the zip itself damaged
            body = mutate(archive, rng)
        elif target == 1:  # one member damaged inside an intact zip
            name = rng.choice(sorted(members))
            body = zipped({**members, name: mutate(members[name], rng)})
        else:
            body = mutate(flat, rng)
        try:
            parsed = parse(Page(body), CONFIG)
        except FeedError:
            outcomes["feed_error"] += 1
            continue
        outcomes["parsed"] += 1
        assert all(isinstance(r, ShopRecord | InspectionRecord) for r in parsed.records)
        assert all(isinstance(r.raw, bytes) and r.reason for r in parsed.rejects)
    assert outcomes["parsed"] > 100


def test_rows_split_without_the_csv_module_read_exactly_as_it_reads_them() -> None:
    """Rows with nothing to unquote skip the csv module; every row reads as the module reads it,
    and a field over its limit is still refused."""
    import csv

    rng = random.Random(5)
    alphabet = ["a", "1", " ", ",", '"', "\r", "\x00", "检", "\t", "'", ";", "\\"]
    lines = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30))) for _ in range(20_000)]
    lines += ["a,b,,c", ",,", " x , y ", "x" * 131_073 + ",1", "x" * 131_071 + ",1"]
    for line in lines:
        raw = line.encode()
        if raw.count(b'"') & 1 or not raw.strip():
            continue  # unbalanced quotes are refused, and blank lines skipped, before any reader
        got = lives._cells(raw, True)
        try:
            rows = list(csv.reader([line]))
            expected: list[str] | str = rows[0] if len(rows) == 1 else "unreadable"
        except csv.Error:
            expected = "unreadable"
        assert (got if isinstance(got, list) else "unreadable") == expected, line[:60]
