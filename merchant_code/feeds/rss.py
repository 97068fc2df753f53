"""Public sentiment from RSS 2.0 and Atom feeds (news sites, the district's own bulletins).

fetch does a conditional GET: the cursor is `{"etag": ..., "last_modified": ...}` (JSON) from
the previous answer, sent back as If-None-Match / If-Modified-Since; a 304 is an empty page.

parse refuses any DOCTYPE or ENTITY declaration before a single entity is expanded (billion
laughs, XXE): expat is driven by hand because ElementTree's C parser hides the hooks that
defusedxml uses. A document in GB2312/GBK/GB18030 or UTF-16 is decoded by Python and re-encoded
to UTF-8 first (expat alone knows only UTF-8/16 and Latin-1), so a Reject's raw bytes are UTF-8.

Each item becomes a SentimentRecord: external_id is the guid (Atom: id) or else the link;
summary is description/summary (else content) with HTML stripped and entities decoded; dates are
RFC 822 (pubDate) or RFC 3339 (Atom published, else updated; dc:date), with no offset meaning
Beijing time; tone comes only from a category saying positive/negative/neutral or 正面/负面/中性.
Shop candidates for the runner's matching (Match.name, Match.address), found in title + summary:
- name: a quoted phrase (「」『』“”) ending in a shop word (店, 馆, 超市, 药房, ...); else an
  unquoted run ending in one, cut after the last lead-in word (投诉, 位于, 一家, 的, 在, ...);
  else a short quoted phrase with no sentence punctuation;
- address: [district 区] road (路/街/大道/巷/弄) number [弄 number] 号, lead-in words cut.
"""

from __future__ import annotations

import datetime
import email.utils
import html
import re
import unicodedata
import xml.etree.ElementTree as ET
import xml.parsers.expat as expat
from typing import Literal

import httpx
import msgspec

from merchant_code.feeds import safe_xml
from merchant_code.feeds.base import FeedError, Match, Page, Parsed, Record, Reject, SentimentRecord
from merchant_code.feeds.values import PLACEHOLDERS, BadRecord

KIND = "rss"

Tone = Literal["positive", "neutral", "negative"]

ATOM = "{http://www.w3.org/2005/Atom}"
_CONTENT = "{http://purl.org/rss/1.0/modules/content/}encoded"
_DC_DATE = "{http://purl.org/dc/elements/1.1/}date"
_ITEM_TAGS = frozenset({"item", ATOM + "entry"})
_MAX_DEPTH = 64
_MAX_TITLE = 500
_MAX_ID = 500
_MAX_SUMMARY = 4000
_BEIJING = datetime.timezone(datetime.timedelta(hours=8))
_TONES: dict[str, Tone] = {
    "positive": "positive", "正面": "positive",
    "negative": "negative", "负面": "negative",
    "neutral": "neutral", "中性": "neutral",
}  # fmt: skip
_DECLARED = re.compile(rb"""^<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_NATIVE = frozenset({"utf-8", "utf8", "us-ascii", "ascii", "iso-8859-1", "latin-1", "latin1"})
_SCRIPT = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_BLOCK = re.compile(r"<(?:br|/?p|/?div|/?li|/?h[1-6]|/?tr|/?td)\b[^>]*>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")
_SHOP_WORD = r"(?:超市|药房|药店|便利店|餐厅|饭店|酒家|酒楼|茶楼|诊所|商行|KTV|店|馆|坊|铺)"
_QUOTED = re.compile(r"[「『“]([^「」『』“”\n]{2,30})[」』”]")
_SHOP = re.compile(r"[\u4e00-\u9fffA-Za-z0-9·&]{1,20}?" + _SHOP_WORD)
_ADDRESS = re.compile(
    r"(?:[\u4e00-\u9fff]{2,4}区)?[\u4e00-\u9fff0-9]{1,12}?(?:路|街|大道|巷)\s*\d{1,5}\s*(?:弄\s*\d{1,5}\s*)?号"
)
_NAME_LEAD = re.compile(
    r"投诉|举报|曝光|反映|位于|一家|这家|那家|发现|探访|走访|市民|网友|记者|顾客|消费者|的|在|了|是|到|称|被|把|对|据|从|该|此"
)
_ADDRESS_LEAD = re.compile(r"位于|地处|坐落于|地址|在|的|是|到")
_SENTENCE = re.compile(r"[，。！？,.!?；;]")


class Config(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    url: str


class _Validators(msgspec.Struct, omit_defaults=True):
    etag: str | None = None
    last_modified: str | None = None


def _utf8(body: bytes) -> tuple[bytes, str]:
    """The document as UTF-8 when expat cannot read its encoding itself, and the encoding to tell
    expat. expat is always told, so that it never acts on a declaration itself: one it does not
    know (in UTF-16 without a BOM, where _DECLARED cannot see it) would go to Python's codecs, whose
    errors (LookupError, UnicodeError, ValueError) are not ExpatError."""
    if body.startswith((b"\xff\xfe", b"\xfe\xff")):
        codec = "utf-16"
    elif body.startswith((b"<\x00", b"\x00<")):  # UTF-16 without a BOM: its first `<` gives the order
        codec = "utf-16-le" if body[0] == 0x3C else "utf-16-be"
    else:
        declared = _DECLARED.match(body.removeprefix(b"\xef\xbb\xbf").lstrip()[:200])
        codec = declared.group(1).decode("ascii").lower() if declared else "utf-8"
        if codec in _NATIVE:
            return body, "ISO-8859-1" if codec.startswith(("iso", "latin")) else "UTF-8"
        codec = "gb18030" if codec in {"gb2312", "gbk", "gb18030"} else codec
    try:
        return body.decode(codec).encode("utf-8"), "UTF-8"
    except (LookupError, UnicodeError) as exc:
        raise FeedError(f"cannot decode the document as {codec}: {str(exc)[:100]}") from None


def _tree(body: bytes) -> tuple[ET.Element, bytes, dict[ET.Element, tuple[int, int]]]:
    """The parsed document, the bytes that were parsed and each item's byte span in them."""
    data, encoding = _utf8(body)
    parser = safe_xml.parser(encoding, namespace_separator="}")
    builder = ET.TreeBuilder()
    starts: list[int] = []
    spans: dict[ET.Element, tuple[int, int]] = {}

    def clark(name: str) -> str:
        return "{" + name if "}" in name else name

    def start(name: str, attrs: dict[str, str]) -> None:
        if len(starts) >= _MAX_DEPTH:
            raise FeedError(f"elements nested deeper than {_MAX_DEPTH}")
        starts.append(parser.CurrentByteIndex)
        builder.start(clark(name), {clark(k): v for k, v in attrs.items()})

    def end(name: str) -> None:
        at = parser.CurrentByteIndex
        # an end tag's index is where `</` starts; an empty element's is just past `/>`
        stop = data.find(b">", at) + 1 if data.startswith(b"</", at) else at
        element = builder.end(clark(name))
        begin = starts.pop()
        if element.tag in _ITEM_TAGS:
            spans[element] = (begin, stop)

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise FeedError(f"not well-formed XML: {exc}") from None
    return builder.close(), data, spans


def _plain(value: str | None) -> str | None:
    """Text without HTML tags, entities decoded, whitespace collapsed; placeholders are None."""
    if value is None:
        return None
    text = _TAG.sub("", _BLOCK.sub(" ", _SCRIPT.sub(" ", value)))
    text = _SPACE.sub(" ", html.unescape(text).replace("\x00", "")).strip()
    text = unicodedata.normalize("NFC", text)
    return None if text.lower() in PLACEHOLDERS else text


def _text(element: ET.Element | None) -> str | None:
    return None if element is None else "".join(element.itertext())


def _moment(value: str | None) -> datetime.datetime | None:
    text = (value or "").strip()
    if not text:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(text)
        if moment.tzinfo is None:  # RFC 2822 "-0000": UTC, source zone unknown
            moment = moment.replace(tzinfo=datetime.UTC)
    except (TypeError, ValueError, IndexError, OverflowError):
        try:
            moment = datetime.datetime.fromisoformat(text)
        except ValueError:
            return None
        moment = moment if moment.tzinfo else moment.replace(tzinfo=_BEIJING)
    # 1900-01-01, 0001-01-01 and the epoch stand for "unknown"
    return None if moment.year < 1990 else moment


def _tone(terms: list[str]) -> Tone | None:
    tones = {_TONES[t.strip().lower()] for t in terms if t.strip().lower() in _TONES}
    return tones.pop() if len(tones) == 1 else None


def _cut(candidate: str, lead: re.Pattern[str]) -> str:
    return lead.split(candidate)[-1].strip()


def _name(text: str) -> str | None:
    quoted = [found.group(1).strip() for found in _QUOTED.finditer(text)]
    for phrase in quoted:
        if re.search(_SHOP_WORD + "$", phrase):
            return phrase
    for found in _SHOP.finditer(text):
        name = _cut(found.group(0), _NAME_LEAD)
        if len(name) >= 3:
            return name
    return next((q for q in quoted if len(q) <= 20 and not _SENTENCE.search(q)), None)


def _address(text: str) -> str | None:
    found = _ADDRESS.search(text)
    return _SPACE.sub("", _cut(found.group(0), _ADDRESS_LEAD)) if found else None


def _candidates(title: str, summary: str | None) -> Match:
    text = unicodedata.normalize("NFKC", f"{title}\n{summary or ''}")[: 2 * _MAX_SUMMARY]
    return Match(name=_name(text), address=_address(text))


def _fields(item: ET.Element) -> tuple[str | None, str | None, str | None, str | None, str | None, list[str]]:
    """(id, link, title, summary, date, categories) of an RSS item or an Atom entry."""
    if item.tag == "item":
        summary = item.findtext("description") or item.findtext(_CONTENT)
        date = item.findtext("pubDate") or item.findtext(_DC_DATE)
        terms = [c.text or "" for c in item.findall("category")]
        return item.findtext("guid"), item.findtext("link"), item.findtext("title"), summary, date, terms
    links = [ln for ln in item.findall(ATOM + "link") if ln.get("rel", "alternate") == "alternate"]
    summary = _text(item.find(ATOM + "summary")) or _text(item.find(ATOM + "content"))
    date = item.findtext(ATOM + "published") or item.findtext(ATOM + "updated")
    terms = [c.get("term") or c.get("label") or "" for c in item.findall(ATOM + "category")]
    link = links[0].get("href") if links else None
    return item.findtext(ATOM + "id"), link, _text(item.find(ATOM + "title")), summary, date, terms


def _record(item: ET.Element) -> SentimentRecord:
    ident, link, raw_title, raw_summary, date, terms = _fields(item)
    link = (link or "").strip() or None
    external_id = (ident or "").strip() or link
    if external_id is None:
        raise BadRecord("no guid, id or link to identify the item")
    if len(external_id) > _MAX_ID:
        raise BadRecord(f"the item's id is longer than {_MAX_ID} characters")
    title = _plain(raw_title)
    if title is None:
        raise BadRecord("the item has no title")
    if len(title) > _MAX_TITLE:
        raise BadRecord(f"the title is longer than {_MAX_TITLE} characters")
    # a summary is cut at _MAX_SUMMARY anyway: no need to unescape a megabyte of markup first
    summary = _plain(raw_summary[: 40 * _MAX_SUMMARY] if raw_summary else None)
    if summary is not None and len(summary) > _MAX_SUMMARY:
        summary = summary[: _MAX_SUMMARY - 1] + "…"
    return SentimentRecord(
        external_id=external_id,
        match=_candidates(title, summary),
        title=title,
        # only web links: a javascript: or data: URL must never reach a page as an href
        url=link if link and link.lower().startswith(("https://", "http://")) else None,
        summary=summary,
        published_at=_moment(date),
        tone=_tone(terms),
    )


def parse(page: Page, config: Config) -> Parsed:
    if not page.body:  # the 304 page
        return Parsed(records=[], rejects=[])
    root, data, spans = _tree(page.body)
    if root.tag == "rss":
        items = root.findall("channel/item")
    elif root.tag == ATOM + "feed":
        items = root.findall(ATOM + "entry")
    else:
        raise FeedError(f"neither RSS 2.0 nor Atom: the root element is <{root.tag[:100]}>")
    records: list[Record] = []
    rejects: list[Reject] = []
    for item in items:
        try:
            records.append(_record(item))
        except BadRecord as exc:
            begin, stop = spans[item]
            ident = (item.findtext("guid") or item.findtext(ATOM + "id") or "").strip()
            rejects.append(Reject(raw=data[begin:stop], reason=str(exc), external_id=ident[:_MAX_ID] or None))
    return Parsed(records=records, rejects=rejects)


def _validators(cursor: str | None) -> _Validators:
    if not cursor:
        return _Validators()
    try:
        return msgspec.json.decode(cursor, type=_Validators)
    except msgspec.DecodeError:
        return _Validators()  # a cursor from elsewhere: fetch unconditionally


async def fetch(client: httpx.AsyncClient, config: Config, cursor: str | None) -> Page:
    sent = _validators(cursor)
    headers = {"Accept": "application/rss+xml, application/atom+xml, application/xml;q=0.9, */*;q=0.1"}
    if sent.etag:
        headers["If-None-Match"] = sent.etag
    if sent.last_modified:
        headers["If-Modified-Since"] = sent.last_modified
    response = await client.get(config.url, headers=headers)
    if response.status_code == 304:
        return Page(body=b"", next_cursor=cursor, last=True)
    response.raise_for_status()
    if not response.content:
        raise FeedError("the feed answered 200 with an empty body")
    got = _Validators(etag=response.headers.get("etag"), last_modified=response.headers.get("last-modified"))
    following = msgspec.json.encode(got).decode() if got.etag or got.last_modified else None
    return Page(
        body=response.content,
        content_type=response.headers.get("content-type"),
        next_cursor=following,
        last=True,
    )
