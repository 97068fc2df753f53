"""The licence registry parser on recorded pages, its fetch against a mock transport, and garbage."""

from __future__ import annotations

import datetime
import random
from pathlib import Path

import httpx
import pytest

from merchant_code.feeds import licences
from merchant_code.feeds.base import FeedError, LicenceRecord, Match, Page, Parsed
from tests.mutations import json_big_string, mutate

FIXTURES = Path(__file__).parent / "fixtures" / "feeds" / "licences"
CONFIG = licences.Config(url="http://127.0.0.1:8900/licences", limit=10)
CST = datetime.timezone(datetime.timedelta(hours=8))


def _parse(name: str) -> Parsed:
    return licences.parse(Page(body=(FIXTURES / name).read_bytes()), CONFIG)


def test_valid_licences_become_records_with_placeholders_as_none() -> None:
    parsed = _parse("page1.json")
    assert parsed.records == [
        LicenceRecord(
            external_id="JY13101060012345",
            match=Match(uscc="91310106MA1FL0XX2B", licence_number="JY13101060012345", name="王记面馆"),
            number="JY13101060012345",
            kind="food_business",
            holder_uscc="91310106MA1FL0XX2B",
            issued_on=datetime.date(2021, 3, 2),
            valid_from=datetime.date(2021, 3, 2),
            valid_to=datetime.date(2026, 3, 1),
            status="active",
            updated_at=datetime.datetime(2024, 5, 1, 9, 30, tzinfo=CST),
        ),
        LicenceRecord(  # spaces and case folded, full-width USCC, "NULL" name, 1900-01-01, 长期
            external_id="91310106MA1FL0XX2B",
            match=Match(uscc="91310106MA1FL0XX2B", licence_number="91310106MA1FL0XX2B"),
            number="91310106MA1FL0XX2B",
            kind="business",
            holder_uscc="91310106MA1FL0XX2B",
            valid_from=datetime.date(2019, 7, 15),
            status="active",
            updated_at=datetime.datetime(2024, 5, 1, 10, 0, tzinfo=CST),
        ),
        LicenceRecord(  # 0001-01-01 issued, no end, revoked
            external_id="沪药经2022-0187",
            match=Match(uscc="92310106MA1K3BQ011", licence_number="沪药经2022-0187", name="康宁大药房"),
            number="沪药经2022-0187",
            kind="pharmacy",
            holder_uscc="92310106MA1K3BQ011",
            valid_from=datetime.date(2022, 1, 10),
            status="revoked",
            updated_at=datetime.datetime(2024, 5, 1, 10, 15, tzinfo=CST),
        ),
        LicenceRecord(  # kind missing: a JY number is a food licence; 9999-12-31 is no end
            external_id="JY13101150088001",
            match=Match(licence_number="JY13101150088001", name="阿芳小吃店"),
            number="JY13101150088001",
            kind="food_business",
            valid_from=datetime.date(2023, 6, 1),
            status="suspended",
        ),
    ]


def test_bad_licences_are_rejected_with_their_raw_bytes_and_reason() -> None:
    rejects = _parse("page1.json").rejects
    assert [(r.external_id, r.reason) for r in rejects] == [
        (
            "JY13101060099999",
            "holder_uscc '91310106MA1FL0XX2A': the check character does not match (GB 32100-2015)",
        ),
        (
            "沪餐证字2015第0001号",
            "a food business licence number is JY and 14 digits, not '沪餐证字2015第0001号'",
        ),
        ("PXL-310106-0042", "status is missing or unknown: '审核中'"),
        ("WS-2020-77", "valid_to 2023-12-31 is before valid_from 2024-01-01"),
        (None, "licence_no is missing"),
        (None, "not a licence item: Expected `str | null`, got `int` - at `$.licence_no`"),
    ]
    assert rejects[0].raw.startswith(b'{"licence_no": "JY13101060099999"')
    assert rejects[-1].raw == b'{"licence_no": 310106, "kind": "other", "status": "\xe6\x9c\x89\xe6\x95\x88"}'


def test_unknown_kind_is_other_and_a_utc_timestamp_keeps_its_offset() -> None:
    record = _parse("page2.json").records[1]
    assert isinstance(record, LicenceRecord)
    assert (record.kind, record.updated_at) == (
        "other",
        datetime.datetime(2024, 5, 1, 23, tzinfo=datetime.UTC),
    )


def test_the_same_page_parsed_twice_is_identical() -> None:
    assert _parse("page1.json") == _parse("page1.json")


def test_an_unreadable_page_is_a_feed_error() -> None:
    with pytest.raises(FeedError):
        licences.parse(Page(body=b"<html>502</html>"), CONFIG)


async def test_fetch_sends_updated_since_and_moves_the_cursor() -> None:
    pages = {None: "page1.json", "2024-05-01T10:23:00+08:00": "page2.json"}
    seen: list[dict[str, str]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(dict(request.url.params))
        body = (FIXTURES / pages[request.url.params.get("updated_since")]).read_bytes()
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        first = await licences.fetch(client, CONFIG, None)
        second = await licences.fetch(client, CONFIG, first.next_cursor)
    assert seen == [{"limit": "10"}, {"limit": "10", "updated_since": "2024-05-01T10:23:00+08:00"}]
    assert (first.next_cursor, first.last) == ("2024-05-01T10:23:00+08:00", False)
    # no next_updated_since: the max updated_at of the page
    assert (second.next_cursor, second.last) == ("2024-05-02T08:00:00+08:00", True)


async def test_a_full_page_that_does_not_move_the_cursor_is_a_feed_error() -> None:
    body = b'{"items": [], "next_updated_since": "2024-05-01T10:00:00+08:00", "has_more": true}'
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=body))
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(FeedError, match="did not move the cursor"):
            await licences.fetch(client, CONFIG, "2024-05-01T10:00:00+08:00")


async def test_an_unreadable_answer_keeps_the_cursor_and_a_5xx_raises() -> None:
    codes = iter([200, 503])
    transport = httpx.MockTransport(lambda request: httpx.Response(next(codes), content=b"oops"))
    async with httpx.AsyncClient(transport=transport) as client:
        page = await licences.fetch(client, CONFIG, "2024-05-01T00:00:00+08:00")
        with pytest.raises(httpx.HTTPStatusError):
            await licences.fetch(client, CONFIG, None)
    assert (page.next_cursor, page.last) == ("2024-05-01T00:00:00+08:00", True)


def _mutate(payload: bytes, rng: random.Random) -> bytes:
    return mutate(payload, rng, big_field=json_big_string, nesting=(b"[", b"]"))


def test_mutated_pages_parse_or_raise_only_feed_error() -> None:
    rng = random.Random(20240501)
    payload = (FIXTURES / "page1.json").read_bytes()
    outcomes = {"parsed": 0, "refused": 0}
    for _ in range(300):
        try:
            licences.parse(Page(body=_mutate(payload, rng)), CONFIG)
            outcomes["parsed"] += 1
        except FeedError:
            outcomes["refused"] += 1
    assert outcomes["parsed"] and outcomes["refused"]


def test_a_one_megabyte_holder_name_and_invalid_utf8_are_rejects_not_errors() -> None:
    big = (
        b'{"licence_no": "X-1", "kind": "other", "status": "active", "holder_name": "'
        + b"x" * 1_000_000
        + b'"}'
    )
    bad = b'{"licence_no": "X-2", "kind": "other", "status": "active", "holder_name": "\xff\xfe"}'
    parsed = licences.parse(Page(body=b'{"items": [' + big + b", " + bad + b"]}"), CONFIG)
    assert parsed.records == []
    assert [r.raw for r in parsed.rejects] == [big, bad]
    assert parsed.rejects[0].reason == "holder_name is longer than 200 characters"
