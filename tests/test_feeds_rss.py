"""The RSS/Atom parser on recorded feeds, conditional GET against a mock transport, and hostile XML."""

from __future__ import annotations

import datetime
import random
import time
from pathlib import Path

import httpx
import pytest

from merchant_code.feeds import rss
from merchant_code.feeds.base import FeedError, Match, Page, Parsed, SentimentRecord
from tests.mutations import mutate, xml_big_text

FIXTURES = Path(__file__).parent / "fixtures" / "feeds" / "rss"
CONFIG = rss.Config(url="http://127.0.0.1:8900/feed.xml")
CST = datetime.timezone(datetime.timedelta(hours=8))


def _parse(name: str) -> Parsed:
    return rss.parse(Page(body=(FIXTURES / name).read_bytes()), CONFIG)


def test_rss_items_become_records_with_candidates_tone_and_plain_text() -> None:
    assert _parse("rss2.xml").records == [
        SentimentRecord(  # CDATA, HTML and a script stripped, &nbsp; decoded, 负面 category
            external_id="jingan-2024-0501-1",
            match=Match(name="王记面馆", address="静安区南京西路1266号"),
            title="市民投诉王记面馆后厨卫生差",
            url="https://news.example.cn/jingan/2024/0501/1.html",
            summary="位于静安区南京西路1266号的王记面馆被曝 后厨有老鼠。",
            published_at=datetime.datetime(2024, 5, 1, 9, 30, tzinfo=CST),
            tone="negative",
        ),
        SentimentRecord(  # no guid: the link; content:encoded and dc:date from their namespaces
            external_id="https://news.example.cn/jingan/2024/0502/7.html",
            match=Match(name="阿芳小吃店", address="昌平路300弄5号"),
            title="「阿芳小吃店」获评放心消费示范店 & 诚信经营",
            url="https://news.example.cn/jingan/2024/0502/7.html",
            summary="地址:昌平路 300 弄 5 号。店主“阿芳”说…".replace(":", "："),
            published_at=datetime.datetime(2024, 5, 2, 8, tzinfo=CST),
            tone="positive",
        ),
        SentimentRecord(  # a javascript: link is no url, "None" no summary, 1900 no date
            external_id="jingan-notice-77",
            match=Match(),
            title="社区通知：五一期间菜场营业时间调整",
        ),
    ]


def test_items_without_title_or_identity_are_rejected_with_their_element() -> None:
    rejects = _parse("rss2.xml").rejects
    assert [(r.external_id, r.reason) for r in rejects] == [
        ("jingan-2024-0503-2", "the item has no title"),
        (None, "no guid, id or link to identify the item"),
    ]
    assert rejects[1].raw == "<item>\n      <title>没有链接也没有 guid</title>\n    </item>".encode()


def test_atom_entries_become_records() -> None:
    parsed = _parse("atom.xml")
    assert parsed.records == [
        SentimentRecord(  # html title unescaped and stripped, the alternate link, published first
            external_id="tag:scjg.example.gov.cn,2024:news-0503",
            match=Match(name="康宁大药房", address="延安西路88号"),
            title="康宁大药房 获评诚信药店",
            url="https://scjg.example.gov.cn/news/2024/0503.html",
            summary="延安西路 88 号的康宁大药房",
            published_at=datetime.datetime(2024, 5, 3, 9, tzinfo=CST),
            tone="positive",
        ),
        SentimentRecord(  # xhtml content, only updated, conflicting categories: no tone
            external_id="tag:scjg.example.gov.cn,2024:news-0504",
            match=Match(name="星光KTV"),
            title="星光KTV 噪音扰民",
            summary="凌晨仍有噪音",
            published_at=datetime.datetime(2024, 5, 4, 22, 15, tzinfo=CST),
        ),
    ]
    assert [(r.external_id, r.reason) for r in parsed.rejects] == [
        ("tag:scjg.example.gov.cn,2024:news-0505", "the item has no title"),
    ]


def test_a_gb2312_feed_is_decoded() -> None:
    assert _parse("gb2312.xml").records == [
        SentimentRecord(
            external_id="http://jd.example.cn/a/9",
            match=Match(name="老城隍庙小吃"),
            title="“老城隍庙小吃”卫生检查合格",
            url="http://jd.example.cn/a/9",
            published_at=datetime.datetime(2024, 5, 6, 14, tzinfo=CST),
            tone="neutral",
        )
    ]


def test_the_same_feed_parsed_twice_is_identical() -> None:
    assert _parse("rss2.xml") == _parse("rss2.xml")


@pytest.mark.parametrize("name", ["billion_laughs.xml", "xxe.xml"])
def test_doctype_and_entities_are_refused_without_expansion(name: str) -> None:
    started = time.perf_counter()
    with pytest.raises(FeedError, match="DOCTYPE or ENTITY"):
        _parse(name)
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(
    "body",
    [
        (FIXTURES / "not_xml.html").read_bytes(),
        b'{"items": []}',
        b'<?xml version="1.0"?><html><body/></html>',
        b'<?xml version="1.0" encoding="no-such-codec"?><rss/>',
    ],
)
def test_a_document_that_is_not_a_feed_is_a_feed_error(body: bytes) -> None:
    with pytest.raises(FeedError):
        rss.parse(Page(body=body), CONFIG)


async def test_fetch_sends_the_validators_and_a_304_is_an_empty_page() -> None:
    seen: list[httpx.Headers] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers)
        if request.headers.get("if-none-match") == '"v1"':
            return httpx.Response(304)
        headers = {"etag": '"v1"', "last-modified": "Wed, 01 May 2024 10:00:00 GMT"}
        return httpx.Response(200, content=(FIXTURES / "rss2.xml").read_bytes(), headers=headers)

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        first = await rss.fetch(client, CONFIG, None)
        second = await rss.fetch(client, CONFIG, first.next_cursor)
    assert "if-none-match" not in seen[0] and "if-modified-since" not in seen[0]
    assert (seen[1]["if-none-match"], seen[1]["if-modified-since"]) == (
        '"v1"',
        "Wed, 01 May 2024 10:00:00 GMT",
    )
    assert first.next_cursor == '{"etag":"\\"v1\\"","last_modified":"Wed, 01 May 2024 10:00:00 GMT"}'
    assert len(rss.parse(first, CONFIG).records) == 3
    assert second == Page(body=b"", next_cursor=first.next_cursor, last=True)
    assert rss.parse(second, CONFIG).records == []


async def test_an_answer_without_validators_leaves_no_cursor_and_a_5xx_raises() -> None:
    codes = iter([200, 503])
    body = (FIXTURES / "atom.xml").read_bytes()
    transport = httpx.MockTransport(lambda request: httpx.Response(next(codes), content=body))
    async with httpx.AsyncClient(transport=transport) as client:
        page = await rss.fetch(client, CONFIG, "not json")
        with pytest.raises(httpx.HTTPStatusError):
            await rss.fetch(client, CONFIG, None)
    assert page.next_cursor is None


def _mutate(payload: bytes, rng: random.Random) -> bytes:
    return mutate(payload, rng, big_field=xml_big_text, nesting=(b"<a>", b"</a>"), depth=5_000)


@pytest.mark.parametrize("name", ["rss2.xml", "atom.xml"])
def test_mutated_feeds_parse_or_raise_only_feed_error(name: str) -> None:
    rng = random.Random(name)
    payload = (FIXTURES / name).read_bytes()
    outcomes = {"parsed": 0, "refused": 0}
    for _ in range(150):
        try:
            rss.parse(Page(body=_mutate(payload, rng)), CONFIG)
            outcomes["parsed"] += 1
        except FeedError:
            outcomes["refused"] += 1
    assert outcomes["parsed"] and outcomes["refused"]


def test_a_one_megabyte_summary_is_cut_and_a_long_title_rejected() -> None:
    item = "<item><title>{}</title><guid>g{}</guid><description>{}</description></item>"
    body = "<rss><channel>{}{}</channel></rss>".format(
        item.format("短标题", 1, "长" * 1_000_000), item.format("长" * 600, 2, "")
    ).encode()
    parsed = rss.parse(Page(body=body), CONFIG)
    (record,) = parsed.records
    assert isinstance(record, SentimentRecord) and record.summary is not None
    assert len(record.summary) == 4000 and record.summary.endswith("…")
    assert [(r.external_id, r.reason) for r in parsed.rejects] == [
        ("g2", "the title is longer than 500 characters")
    ]
