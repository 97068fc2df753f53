"""The review platform parser on recorded pages, its cursor paging against a mock transport, and garbage."""

from __future__ import annotations

import datetime
import random
from pathlib import Path

import httpx
import pytest

from merchant_code.feeds import reviews
from merchant_code.feeds.base import FeedError, Match, Page, Parsed, ReviewRecord
from tests.mutations import json_big_string, mutate

FIXTURES = Path(__file__).parent / "fixtures" / "feeds" / "reviews"
CONFIG = reviews.Config(url="http://127.0.0.1:8900/reviews", limit=20)
CST = datetime.timezone(datetime.timedelta(hours=8))
SHOP = Match(business_id="7KQ2M9XW4D1HB")


def _parse(name: str) -> Parsed:
    return reviews.parse(Page(body=(FIXTURES / name).read_bytes()), CONFIG)


def test_reviews_edits_and_deletions_become_records() -> None:
    assert _parse("page1.json").records == [
        ReviewRecord(
            external_id="r-1001",
            match=SHOP,
            rating=5,
            body="面很筋道，汤头浓。",
            author="小李",
            posted_at=datetime.datetime(2024, 5, 1, 12, tzinfo=CST),
            updated_at=datetime.datetime(2024, 5, 1, 12, tzinfo=CST),
        ),
        ReviewRecord(  # integer id, rating "4", "NULL" text, naive time is Beijing time, edited later
            external_id="1002",
            match=Match(business_id="91310106MA1FL0XX2B"),
            rating=4,
            posted_at=datetime.datetime(2024, 5, 1, 12, 30, tzinfo=CST),
            edited_at=datetime.datetime(2024, 5, 3, 9, tzinfo=CST),
            updated_at=datetime.datetime(2024, 5, 3, 9, tzinfo=CST),
        ),
        ReviewRecord(  # a deletion whose text is gone
            external_id="r-1003",
            match=SHOP,
            rating=1,
            author="匿名用户",
            posted_at=datetime.datetime(2024, 4, 20, 18, tzinfo=CST),
            edited_at=datetime.datetime(2024, 5, 4, 10, tzinfo=CST),
            deleted=True,
            updated_at=datetime.datetime(2024, 5, 4, 10, tzinfo=CST),
        ),
        ReviewRecord(  # a bare tombstone: the platform says only that the review is gone
            external_id="r-1004",
            match=SHOP,
            rating=None,
            posted_at=datetime.datetime(2024, 4, 21, 18, tzinfo=CST),
            edited_at=datetime.datetime(2024, 5, 4, 11, tzinfo=CST),
            deleted=True,
            updated_at=datetime.datetime(2024, 5, 4, 11, tzinfo=CST),
        ),
    ]


def test_impossible_ratings_and_placeholders_are_rejected() -> None:
    rejects = _parse("page1.json").rejects
    assert [(r.external_id, r.reason) for r in rejects] == [
        ("r-1005", "rating must be an integer from 1 to 5, not '0'"),
        ("r-1006", "rating must be an integer from 1 to 5, not '6'"),
        ("r-1007", "rating must be an integer from 1 to 5, not 'five'"),
        ("r-1008", "rating must be an integer from 1 to 5, not 'None'"),
        ("r-1009", "rating must be an integer from 1 to 5, not '3.5'"),
        ("r-1010", "created_at is missing or a placeholder"),
        ("r-1011", "business_ref is missing: the review cannot be matched to a shop"),
        (None, "not a review: Expected `int | float | str | null`, got `bool` - at `$.rating`"),
    ]
    assert rejects[0].raw == (
        b'{"id": "r-1005", "business_ref": "7KQ2M9XW4D1HB", "rating": 0, '
        b'"created_at": "2024-05-01T13:00:00+08:00"}'
    )


def test_a_placeholder_update_time_is_none_and_not_an_edit() -> None:
    (record,) = _parse("last.json").records
    assert isinstance(record, ReviewRecord)
    assert (record.updated_at, record.edited_at) == (None, None)


def test_the_same_page_parsed_twice_is_identical() -> None:
    assert _parse("page1.json") == _parse("page1.json")


def test_an_unreadable_page_is_a_feed_error() -> None:
    with pytest.raises(FeedError):
        reviews.parse(Page(body=b'{"data": {"id": 1}}'), CONFIG)


async def test_fetch_follows_the_cursor_and_keeps_it_at_the_end() -> None:
    pages = {None: "page1.json", "eyJwIjoxMn0": "last.json"}
    seen: list[dict[str, str]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(dict(request.url.params))
        return httpx.Response(200, content=(FIXTURES / pages[request.url.params.get("cursor")]).read_bytes())

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        first = await reviews.fetch(client, CONFIG, None)
        second = await reviews.fetch(client, CONFIG, first.next_cursor)
    assert seen == [{"limit": "20"}, {"limit": "20", "cursor": "eyJwIjoxMn0"}]
    assert (first.next_cursor, first.last) == ("eyJwIjoxMn0", False)
    # next_cursor null: the next pull starts again from the last position, not from scratch
    assert (second.next_cursor, second.last) == ("eyJwIjoxMn0", True)


def _mutate(payload: bytes, rng: random.Random) -> bytes:
    return mutate(payload, rng, big_field=json_big_string, nesting=(b"{", b"}"))


def test_mutated_pages_parse_or_raise_only_feed_error() -> None:
    rng = random.Random(20240502)
    payload = (FIXTURES / "page1.json").read_bytes()
    outcomes = {"parsed": 0, "refused": 0}
    for _ in range(300):
        try:
            reviews.parse(Page(body=_mutate(payload, rng)), CONFIG)
            outcomes["parsed"] += 1
        except FeedError:
            outcomes["refused"] += 1
    assert outcomes["parsed"] and outcomes["refused"]


def test_a_one_megabyte_text_invalid_utf8_and_a_nul_are_rejects_not_errors() -> None:
    head = b'{"id": "r-9", "business_ref": "X", "rating": 3, "created_at": "2024-05-01T00:00:00Z", "text": "'
    items = [head + b"x" * 1_000_000 + b'"}', head + b'\xc3\x28"}', head + b'a\\u0000b"}']
    parsed = reviews.parse(Page(body=b'{"data": [' + b", ".join(items) + b"]}"), CONFIG)
    assert parsed.records == []
    assert [r.raw for r in parsed.rejects] == items
    assert parsed.rejects[2].reason == "text contains a NUL character"
