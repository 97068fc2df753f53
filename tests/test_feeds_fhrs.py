"""FHRS-style establishments API parsing on recorded-style pages (tests/fixtures/feeds/fhrs): pure,
no database."""

from __future__ import annotations

import datetime
import random
from pathlib import Path

import httpx
import msgspec
import pytest

from merchant_code.feeds import fhrs
from merchant_code.feeds.base import FeedError, InspectionRecord, Match, Page, ShopRecord

FIXTURES = Path(__file__).parent / "fixtures" / "feeds" / "fhrs"
CONFIG = fhrs.Config(url="http://127.0.0.1:8123/Establishments", page_size=5)
UTC = datetime.UTC


def page(name: str) -> Page:
    return Page((FIXTURES / f"{name}.json").read_bytes())


def shop(fhrsid: str, **fields: object) -> ShopRecord:
    return ShopRecord(external_id=fhrsid, match=Match(business_id=fhrsid, **fields))  # type: ignore[arg-type]


def rated(fhrsid: str, when: str, rating: str, **fields: object) -> InspectionRecord:
    moment = datetime.datetime.fromisoformat(when).replace(tzinfo=UTC)
    return InspectionRecord(
        external_id=f"{fhrsid}|{when}",
        match=Match(business_id=fhrsid),
        inspected_on=moment.date(),
        rating=rating,
        updated_at=moment,
        score_scale="fhrs_points",
        **fields,  # type: ignore[arg-type]
    )


def test_page_one_numeric_and_word_ratings_casing_and_placeholders() -> None:
    parsed = fhrs.parse(page("page1"), CONFIG)
    # LocalAuthorityBusinessID that is no USCC is tried as a licence number
    assert parsed.records == [
        # empty address lines skipped, empty phone is none, geocode decimal strings
        shop(
            "1001",
            licence_number="PI/000012345",
            name="The Golden Spoon",
            address="12 High Street, Ealing, London",
            postal_code="W5 5DB",
            lat=51.51315,
            lon=-0.30563,
        ),
        rated("1001", "2019-05-10T00:00:00", "5", result="pass", score=5.0),
        # AwaitingInspection with 0001-01-01: the shop only; empty geocode strings are unknown
        shop(
            "1002",
            licence_number="PI/000012399",
            name="Kebab Corner",
            address="3 Station Parade",
            postal_code="W5 3LD",
            phone="020 8998 0000",
        ),
        # capitalised `Scores`/`Geocode`; one empty-string score makes the sum unknown
        shop(
            "1003",
            licence_number="PI/000012400",
            name="Corner Shop Express",
            address="77 Uxbridge Road, London",
            postal_code="W13 8RA",
            lat=51.5102,
            lon=-0.318,
        ),
        rated("1003", "2022-11-21T00:00:00", "2", result="rectify"),
        # Exempt with a null RatingDate: the shop only
        shop(
            "1004",
            name="St Mary's Church Hall",
            address="Church Lane, Ealing",
            postal_code="W5 4AA",
        ),
    ]
    [reject] = parsed.rejects
    assert reject.reason == "establishment without FHRSID"
    assert reject.external_id is None
    assert msgspec.json.decode(reject.raw)["BusinessName"] == "Mystery Van"
    assert reject.raw.startswith(b"{") and reject.raw.endswith(b"}")


def test_page_two_scottish_words_number_types_and_unusable_establishments() -> None:
    parsed = fhrs.parse(page("page2"), CONFIG)
    assert parsed.records == [
        shop(
            "2001",
            name="Highland Fish Bar",
            address="4 Harbour Street, Oban",
            postal_code="PA34 5AA",
            lat=56.415,
            lon=-5.472,
            phone="01631 000000",
        ),
        rated("2001", "2021-11-03T00:00:00", "Pass", result="pass"),
        shop(
            "2002",
            name="Loch View Cafe",
            address="The Esplanade, Oban",
            postal_code="PA34 5PX",
            lat=56.412,
            lon=-5.48,
        ),
        rated("2002", "2023-02-17T00:00:00", "Improvement Required", result="rectify"),
        shop(
            "2003",
            name="Burger Shack",
            address="9 Market Place",
            postal_code="W5 2PA",
            lat=51.514,
            lon=-0.301,
        ),
        rated("2003", "2022-02-01T00:00:00", "0", result="fail", score=70.0),
        shop(
            "2004", name="New Bakery", address="1 Bond Street", postal_code="W5 5AP", lat=51.512, lon=-0.302
        ),
        rated("2004", "2023-01-15T00:00:00", "AwaitingPublication"),
        # an unreadable RatingDate quarantines the rating, not the shop
        shop(
            "2005", name="Pop-up Stall", address="Walpole Park", postal_code="W5 5EQ", lat=51.51, lon=-0.306
        ),
        # FHRSID as a string, RatingValue and geocode as numbers, scores as numeric strings
        shop(
            "2006",
            name="Noodle Bar",
            address="20 The Broadway",
            postal_code="W5 2NP",
            lat=51.51111,
            lon=-0.30412,
        ),
        rated("2006", "2020-08-30T00:00:00", "1", result="fail", score=50.0),
    ]
    assert [(r.reason, r.external_id) for r in parsed.rejects] == [
        ("unreadable RatingDate 'yesterday'", "2005"),
        ("unusable establishment: Expected `str | null`, got `int` - at `$.BusinessName`", "2007"),
    ]
    assert msgspec.json.decode(parsed.rejects[1].raw)["FHRSID"] == 2007


def test_parsing_the_same_page_twice_gives_identical_output() -> None:
    for name in ("page1", "page2"):
        assert fhrs.parse(page(name), CONFIG) == fhrs.parse(page(name), CONFIG)


def test_a_repeated_fhrsid_on_one_page_is_quarantined() -> None:
    body = b'{"establishments": [{"FHRSID": 7, "BusinessName": "A"}, {"FHRSID": 7, "BusinessName": "B"}]}'
    parsed = fhrs.parse(Page(body), CONFIG)
    assert parsed.records == [shop("7", name="A")]
    assert [(r.raw, r.reason, r.external_id) for r in parsed.rejects] == [
        (b'{"FHRSID": 7, "BusinessName": "B"}', "FHRSID repeated in the page", "7")
    ]


def test_invalid_utf8_inside_one_establishment_quarantines_only_that_one() -> None:
    body = b'{"establishments": [{"FHRSID": 1, "BusinessName": "Caf\xe9"}, {"FHRSID": 2}], "meta": {}}'
    parsed = fhrs.parse(Page(body), CONFIG)
    assert parsed.records == [shop("2")]
    assert parsed.rejects[0].raw == b'{"FHRSID": 1, "BusinessName": "Caf\xe9"}'


@pytest.mark.parametrize(
    "body",
    [b"", b"<html>502 Bad Gateway</html>", b'{"meta": {"totalPages": 1}}', b'{"establishments": {}}', b"[]"],
)
def test_a_body_that_is_not_an_establishments_list_raises_feed_error(body: bytes) -> None:
    with pytest.raises(FeedError, match="not an establishments list"):
        fhrs.parse(Page(body), CONFIG)


def test_config_bounds_the_page_size() -> None:
    for size in (0, 5001):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert({"url": "http://x", "page_size": size}, fhrs.Config)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"url": "http://x", "pageSize": 10}, fhrs.Config)
    assert msgspec.convert({"url": "http://x"}, fhrs.Config) == fhrs.Config(url="http://x", page_size=500)


async def test_fetch_sends_the_version_header_and_walks_the_pages() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        number = request.url.params["pageNumber"]
        return httpx.Response(
            200, content=page(f"page{number}").body, headers={"content-type": "application/json"}
        )

    pages: list[Page] = []
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        cursor: str | None = None
        while True:
            got = await fhrs.fetch(client, CONFIG, cursor)
            pages.append(got)
            cursor = got.next_cursor
            if got.last:
                break
    assert [(p.next_cursor, p.last) for p in pages] == [("2", False), (None, True)]
    assert [p.body for p in pages] == [page("page1").body, page("page2").body]
    assert pages[0].content_type == "application/json"
    for number, request in enumerate(seen, start=1):
        assert request.method == "GET"
        assert request.headers["x-api-version"] == "2"
        assert request.headers["accept"] == "application/json"
        assert request.url.path == "/Establishments"
        assert dict(request.url.params) == {"pageNumber": str(number), "pageSize": "5"}


async def test_fetch_ends_when_the_body_has_no_page_count_and_raises_on_errors() -> None:
    answers = iter([httpx.Response(200, content=b"not json"), httpx.Response(503)])
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda request: next(answers))) as client:
        got = await fhrs.fetch(client, fhrs.Config(url=CONFIG.url, api_version="3"), "4")
        assert (got.next_cursor, got.last) == (None, True)
        with pytest.raises(httpx.HTTPStatusError):
            await fhrs.fetch(client, CONFIG, None)
        with pytest.raises(FeedError, match="not a page number"):
            await fhrs.fetch(client, CONFIG, "zero")


def mutate(data: bytes, rng: random.Random) -> bytes:
    choice = rng.randrange(5)
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
    if choice == 3:  # a 1 MB string value
        return data.replace(b'"W5 5DB"', b'"' + b"x" * 1_000_000 + b'"', 1)
    return data[:at] + b"x" * 1_000_000 + data[at:]  # a 1 MB run of bytes anywhere


def test_random_mutations_give_records_and_rejects_or_feed_error_never_anything_else() -> None:
    rng = random.Random(20240502)
    bodies = [page("page1").body, page("page2").body]
    parsed_count = 0
    for _ in range(300):
        body = mutate(rng.choice(bodies), rng)
        try:
            parsed = fhrs.parse(Page(body), CONFIG)
        except FeedError:
            continue
        parsed_count += 1
        assert all(isinstance(r, ShopRecord | InspectionRecord) for r in parsed.records)
        assert all(isinstance(r.raw, bytes) and r.reason for r in parsed.rejects)
    assert parsed_count > 50


def bulk_records() -> list[ShopRecord | InspectionRecord]:
    """What tests/fixtures/feeds/fhrs/bulk.json and bulk.xml hold, the same establishments."""
    return [
        # LocalAuthorityBusinessID holding a USCC matches as one; `Geocode` with `Longitude`
        shop(
            "3001",
            uscc="92310199MA1FL0A1XR",
            name="Harbour Noodles",
            address="5 Quay Road, Shanghai",
            postal_code="200030",
            lat=31.1932,
            lon=121.4371,
        ),
        # a bulk file's date has no time; the id keeps the API's form
        rated("3001", "2025-03-14T00:00:00", "5", result="pass", score=5.0),
        # a nil RatingDate, empty Scores and Geocode: the shop only, nothing unknown invented
        shop("3002", licence_number="JY13101990000002", name="Tea Corner", address="9 Garden Lane"),
        shop(
            "3003",
            licence_number="25/00313/FOOD",
            name="Dumpling House",
            address="12 Long Street",
            lat=31.2,
            lon=121.44,
        ),
        rated("3003", "2024-11-05T00:00:00", "2", result="rectify", score=30.0),
    ]


def test_a_bulk_open_data_json_file_is_read_like_the_api() -> None:
    parsed = fhrs.parse(page("bulk"), CONFIG)
    assert parsed.records == bulk_records()
    [reject] = parsed.rejects
    assert (reject.reason, reject.external_id) == (
        "unusable establishment: Expected `str | null`, got `int` - at `$.BusinessName`",
        "3004",
    )
    assert msgspec.json.decode(reject.raw)["BusinessName"] == 42


def test_a_bulk_open_data_xml_file_gives_the_same_records() -> None:
    parsed = fhrs.parse(Page((FIXTURES / "bulk.xml").read_bytes()), CONFIG)
    assert parsed.records == bulk_records()
    [reject] = parsed.rejects
    assert reject.reason == "establishment without FHRSID"
    assert reject.raw.startswith(b"<EstablishmentDetail>") and reject.raw.endswith(b"</EstablishmentDetail>")
    assert b"No Id Stall" in reject.raw


@pytest.mark.parametrize(
    "collection",
    [
        # newer files: the collection is the list itself
        b'[{"FHRSID": "7", "BusinessName": "A"}]',
        # an XML-to-JSON converter writes a single child as an object, not a list of one
        b'{"EstablishmentDetail": {"FHRSID": "7", "BusinessName": "A"}}',
        b'{"EstablishmentDetail": [{"FHRSID": 7, "businessName": "A"}]}',
    ],
)
def test_every_bulk_json_collection_shape_is_read(collection: bytes) -> None:
    head = b'{"FHRSEstablishment": {"Header": {"ItemCount": "1"}, "EstablishmentCollection": '
    body = head + collection + b"}}"
    assert fhrs.parse(Page(body), CONFIG).records == [shop("7", name="A")]


def test_an_empty_bulk_file_is_no_records_and_xml_declarations_are_refused() -> None:
    empty = b'{"FHRSEstablishment": {"Header": {"ItemCount": "0"}, "EstablishmentCollection": null}}'
    assert fhrs.parse(Page(empty), CONFIG) == fhrs.Parsed(records=[], rejects=[])
    xxe = (
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        b"<FHRSEstablishment><EstablishmentCollection><EstablishmentDetail><FHRSID>&e;</FHRSID>"
        b"</EstablishmentDetail></EstablishmentCollection></FHRSEstablishment>"
    )
    with pytest.raises(FeedError, match="DOCTYPE"):
        fhrs.parse(Page(xxe), CONFIG)
    with pytest.raises(FeedError, match="not an establishments list"):
        fhrs.parse(Page(b"<FHRSEstablishment><Header>"), CONFIG)
