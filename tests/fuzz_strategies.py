"""Hypothesis strategies for the decoder fuzz tests (tests/test_fuzz_decoders.py): damage done to
valid payloads at the byte level, at the value level (JSON values of the wrong type, CSV cells
with quotes, NULs and line ends, XML texts and declarations), and zip archives with wrong members
and wrong header fields. Big inputs are made by repetition, never drawn byte by byte, so that a
run stays fast."""

from __future__ import annotations

import copy
import csv
import datetime
import io
import json
import struct
import warnings
import zipfile
from collections.abc import Sequence
from typing import Any, TypeVar
from xml.sax.saxutils import escape

from hypothesis import strategies as st

T = TypeVar("T")


def weighted(*choices: tuple[int, st.SearchStrategy[T]]) -> st.SearchStrategy[T]:
    """One of the strategies, each drawn `weight` times as often (st.one_of drops repeats)."""
    expanded = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.integers(0, len(expanded) - 1).flatmap(lambda index: expanded[index])


# --- bytes ---------------------------------------------------------------------------------------

# invalid UTF-8 (a lone continuation, an overlong form, an encoded surrogate, a cut sequence),
# a BOM, a NUL, line ends
BAD_BYTES: tuple[bytes, ...] = (
    b"\xff",
    b"\x80",
    b"\xc3\x28",
    b"\xc0\xaf",
    b"\xed\xa0\x80",
    b"\xe2\x82",
    b"\xf4\x90\x80\x80",
    b"\xef\xbb\xbf",
    b"\xff\xfe",
    b"\x00",
    b"\r",
    b"\n",
    b"\r\n",
)


def big(unit: bytes) -> st.SearchStrategy[bytes]:
    """A long run of `unit` (some past csv's 128 KiB field limit), made without drawing it."""
    return st.sampled_from([1_000, 70_000, 140_000]).map(lambda n: unit * (n // max(len(unit), 1)))


@st.composite
def mutated(draw: st.DrawFn, payloads: Sequence[bytes], tokens: Sequence[bytes] = ()) -> bytes:
    """One of `payloads` after one to four edits: truncation, bit flips, bytes overwritten,
    inserted or deleted, a span repeated, a token of the format or of BAD_BYTES inserted, a long
    run inserted."""
    data = bytearray(draw(st.sampled_from(payloads)))
    dictionary = (*BAD_BYTES, *tokens)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.integers(0, 7))
        if op == 0:
            del data[at:]
        elif op == 1 and data:
            index = min(at, len(data) - 1)
            data[index] ^= 1 << draw(st.integers(0, 7))
        elif op == 2:
            noise = draw(st.binary(min_size=1, max_size=8))
            data[at : at + len(noise)] = noise
        elif op == 3:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == 4:
            del data[at : at + draw(st.integers(1, 64))]
        elif op == 5:
            span = data[at : at + draw(st.integers(1, 200))]
            data[at:at] = span * draw(st.integers(1, 3))
        elif op == 6:
            data[at:at] = draw(st.sampled_from(dictionary))
        else:
            data[at:at] = draw(big(draw(st.sampled_from([b"x", b'"', "长".encode(), b"\x00", b"<a>"]))))
    return bytes(data)


# --- texts people and systems write ---------------------------------------------------------------

_OFFSETS = st.timedeltas(
    min_value=-datetime.timedelta(hours=23, minutes=59), max_value=datetime.timedelta(hours=23, minutes=59)
).map(datetime.timezone)
# the extremes next to an offset are where converting between zones leaves the datetime range
_EDGE_MOMENTS = st.sampled_from(
    [
        datetime.datetime.min,
        datetime.datetime.max,
        datetime.datetime(1900, 1, 1),
        datetime.datetime(1970, 1, 1),
    ]
)
_WHOLE_HOURS = st.sampled_from([-12, -8, -1, 1, 8, 14]).map(
    lambda h: datetime.timezone(datetime.timedelta(hours=h))
)
MOMENTS = st.one_of(
    st.builds(lambda m, tz: m.replace(tzinfo=tz), _EDGE_MOMENTS, _WHOLE_HOURS | _OFFSETS),
    st.builds(lambda m, tz: m.replace(tzinfo=tz), _EDGE_MOMENTS, st.none() | st.just(datetime.UTC)),
    st.datetimes(timezones=st.none() | st.just(datetime.UTC) | _OFFSETS),
)
ISO_TEXTS = st.one_of(
    MOMENTS.map(lambda m: m.isoformat()),
    MOMENTS.map(lambda m: m.isoformat(sep=" ", timespec="minutes")),
    st.dates().map(lambda d: d.isoformat()),
    st.dates().map(lambda d: f"{d.year:04d}{d.month:02d}{d.day:02d}"),
    st.dates().map(lambda d: d.isoformat().replace("-", "/")),
    st.from_regex(
        r"[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2})?)?([+-][0-9]{2}:?[0-9]{2}|Z)?",
        fullmatch=True,
    ),
    st.from_regex(r"[0-9]{8}", fullmatch=True),
)
EDGE_ISO_TEXTS = st.builds(
    lambda m, tz: m.replace(tzinfo=tz).isoformat(), _EDGE_MOMENTS, _WHOLE_HOURS | _OFFSETS
)
DATE_TEXTS = EDGE_ISO_TEXTS | ISO_TEXTS
DATE_KEYS = ("date", "_at", "_on", "_since", "_from", "_to")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec", "Foo")
RFC822_TEXTS = st.builds(
    "{}, {} {} {} {}:{}:{} {}".format,
    st.sampled_from(["Mon", "Wed", "Xyz", ""]),
    st.integers(-5, 40) | st.integers(),
    st.sampled_from(_MONTHS),
    st.integers(-1, 10_000) | st.integers(),
    st.integers(-1, 99),
    st.integers(-1, 99),
    st.integers(-1, 99),
    st.sampled_from(["+0800", "-0000", "GMT", "UT", "EST", "+9999", "-2400", "Z", "+08", ""]),
)
PLACEHOLDER_TEXTS = st.sampled_from(
    [
        "",
        " ",
        "NULL",
        "null",
        "None",
        "nil",
        "N/A",
        "n/a",
        "-",
        "--",
        "NaN",
        "无",
        "暂无",
        "长期",
        "9999-12-31",
        "0",
    ]
)
NUMBER_TEXTS = st.one_of(
    st.floats().map(str),
    st.integers().map(str),
    st.sampled_from(["1e999", "-1e999", "inf", "nan", "-0", "0x10", "1_000", "٣", "５", "9" * 5000]),
)
TEXTS = st.one_of(
    st.text(max_size=40),
    PLACEHOLDER_TEXTS,
    ISO_TEXTS,
    NUMBER_TEXTS,
    st.sampled_from(
        ['"', '""', "a,b", "a\nb", "a\rb", "\x00", "\ufeff", "\u2028", "ＡＢＣ１２３", "ß", "ﬃ", "﷽"]
    ),
    big(b"x").map(lambda b: b.decode()),
)


# --- JSON: values of the wrong type, deep nesting, huge numbers and strings -----------------------

# a string value that is replaced by raw JSON text after encoding (json.dumps cannot write these)
_RAW = "\x00raw:"
RAW_JSON: tuple[bytes, ...] = (
    b"1e999",
    b"-1e999",
    b"NaN",
    b"Infinity",
    b"-0",
    b"1.5e308",
    b"9" * 5000,
    b"-" + b"9" * 30,
    b"0.000000000000000000000000000000000001",
    b'"\\ud800"',
    b'"\\udc00\\ud800"',
    b'"' + b"x" * 200_000 + b'"',
    b'"\\u0000"',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
    b"[" * 300 + b"]" * 300,
)


def _raw_marker() -> st.SearchStrategy[str]:
    return st.integers(0, len(RAW_JSON) - 1).map(lambda i: f"{_RAW}{i}")


def json_values(keys: Sequence[str], texts: st.SearchStrategy[str] = TEXTS) -> st.SearchStrategy[Any]:
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        texts,
        _raw_marker(),
    )
    return st.recursive(
        leaves,
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.sampled_from(list(keys)) | st.text(max_size=8), children, max_size=5)
        ),
        max_leaves=12,
    )


def _slots(node: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) of a parsed JSON document, the document itself excluded."""
    found: list[tuple[Any, Any]] = []
    stack = [node]
    while stack:
        current = stack.pop()
        items = current.items() if isinstance(current, dict) else enumerate(current)
        for key, value in items:
            found.append((current, key))
            if isinstance(value, dict | list):
                stack.append(value)
    return found


def encode_json(doc: Any, *, ascii_only: bool) -> bytes:
    text = json.dumps(doc, ensure_ascii=ascii_only).encode()
    for index in reversed(range(len(RAW_JSON))):  # reversed: raw:1 must not eat raw:10
        text = text.replace(b'"\\u0000raw:' + str(index).encode() + b'"', RAW_JSON[index])
    return text


@st.composite
def json_mutation(draw: st.DrawFn, docs: Sequence[Any], keys: Sequence[str]) -> bytes:
    """A fixture document with one to four values replaced by values of any type (or removed, or
    a record duplicated), encoded, then sometimes damaged at the byte level too."""
    doc = copy.deepcopy(draw(st.sampled_from(docs)))
    # raw JSON (deep nesting, huge numbers and strings) is drawn as often as every other value
    values = json_values(keys) | _raw_marker()
    for _ in range(draw(st.integers(1, 4))):
        slots = _slots(doc)
        if not slots:
            break
        container, key = draw(st.sampled_from(slots))
        action = draw(st.integers(0, 5))
        if action == 0 and isinstance(container, dict):
            del container[key]
        elif action == 1 and isinstance(container, list):
            container.append(copy.deepcopy(container[key]))  # a repeated record
        elif isinstance(key, str) and key.lower().endswith(DATE_KEYS):
            container[key] = draw(DATE_TEXTS | values)
        else:
            container[key] = draw(values)
    data = encode_json(doc, ascii_only=draw(st.booleans()))
    if draw(st.integers(0, 3)) == 0:
        data = draw(mutated([data], tokens=(b'"', b"{", b"}", b"[", b"]", b",", b":", b"null")))
    return data


# --- CSV -------------------------------------------------------------------------------------------


def csv_rows(data: bytes) -> list[list[str]]:
    """The table's rows; bytes that are not UTF-8 (a GBK name in a fixture) survive as surrogates."""
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig", "surrogateescape"), newline="")))


TYPED_COLUMNS = (*DATE_KEYS, "score", "latitude", "longitude", "critical", "result")


@st.composite
def csv_mutation(draw: st.DrawFn, tables: Sequence[bytes], columns: Sequence[str]) -> bytes:
    """A fixture table with cells replaced (quotes, NULs, line ends, dates at the ends of the
    range, numbers that are not), rows cut or lengthened, a column renamed; written back by csv
    (quoted as needed) or joined raw (so quotes and line ends break the row)."""
    rows = [list(row) for row in csv_rows(draw(st.sampled_from(tables)))]
    header = [title.strip().lower() for title in rows[0]]
    typed = [i for i, title in enumerate(header) if title.endswith(TYPED_COLUMNS)]
    for _ in range(draw(st.integers(0, 2)) if typed and len(rows) > 1 else 0):
        # a date or number column of a row given a date or number at the ends of the range
        row = rows[draw(st.integers(1, len(rows) - 1))]
        index = draw(st.sampled_from(typed))
        if index < len(row):
            row[index] = draw(DATE_TEXTS if header[index].endswith(DATE_KEYS) else NUMBER_TEXTS | TEXTS)
    for _ in range(draw(st.integers(0, 5))):
        r = draw(st.integers(0, len(rows) - 1))
        action = draw(st.integers(0, 6))
        if action == 0 and rows[r]:
            del rows[r][draw(st.integers(0, len(rows[r]) - 1)) :]
        elif action == 1:
            rows[r].append(draw(TEXTS))
        elif action == 2:
            rows.insert(r, [draw(TEXTS) for _ in range(draw(st.integers(0, 6)))])
        elif action == 3 and rows[0]:
            rows[0][draw(st.integers(0, len(rows[0]) - 1))] = draw(st.sampled_from(list(columns)))
        elif rows[r]:
            rows[r][draw(st.integers(0, len(rows[r]) - 1))] = draw(TEXTS)
    ending = draw(st.sampled_from(["\n", "\r\n", "\n", "\r"]))
    if draw(st.booleans()):
        out = io.StringIO()
        if draw(st.booleans()):
            writer = csv.writer(out, lineterminator=ending, quoting=csv.QUOTE_MINIMAL)
        else:
            writer = csv.writer(out, lineterminator=ending, quoting=csv.QUOTE_ALL)
        for row in rows:
            writer.writerow(row)
        text = out.getvalue()
    else:
        text = ending.join(",".join(row) for row in rows)
    prefix = draw(st.sampled_from(["", "\ufeff"]))
    encoding = draw(st.sampled_from(["utf-8"] * 6 + ["gb18030", "utf-16"]))
    return (prefix + text).encode(encoding, errors="surrogateescape" if encoding == "utf-8" else "replace")


# --- zip -------------------------------------------------------------------------------------------

_COMPRESSIONS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
# (signature, {field offset: struct format}) of the local header, the central directory entry and
# the end of the central directory: flags, method, CRC, sizes, name and extra lengths, offsets
_HEADERS: tuple[tuple[bytes, dict[int, str]], ...] = (
    (b"PK\x03\x04", {6: "<H", 8: "<H", 14: "<I", 18: "<I", 22: "<I", 26: "<H", 28: "<H"}),
    (b"PK\x01\x02", {8: "<H", 10: "<H", 16: "<I", 20: "<I", 24: "<I", 28: "<H", 30: "<H", 42: "<I"}),
    (b"PK\x05\x06", {8: "<H", 10: "<H", 12: "<I", 16: "<I", 20: "<H"}),
)


def build_zip(members: Sequence[tuple[str, bytes]], compression: int) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about a duplicate name: wanted here
        with zipfile.ZipFile(buffer, "w", compression) as archive:
            for name, data in members:
                archive.writestr(name, data)
    return buffer.getvalue()


@st.composite
def zip_mutation(draw: st.DrawFn, members: Sequence[tuple[str, bytes]]) -> bytes:
    """An archive of some of `members` (renamed, repeated, damaged, or among other files), with
    any compression; sometimes a header field (an encrypted flag, an unknown method, a huge
    declared size, a wrong CRC or offset) rewritten, or a member's compressed data damaged."""
    names = st.sampled_from(
        [
            "inspections.csv",
            "businesses.csv",
            "violations.csv",
            "feed_info.csv",
            "legend.csv",
            "putuo/INSPECTIONS.CSV",
            "a\\b\\inspections.csv",
            "__MACOSX/putuo/._inspections.csv",
            "putuo/",
            "inspections.csv/",
            "readme.txt",
            "other.csv",
        ]
    ) | st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12)
    chosen: list[tuple[str, bytes]] = []
    for name, data in members:
        if draw(st.integers(0, 4)) == 0:
            continue  # the member is missing
        if draw(st.integers(0, 3)) == 0:
            data = draw(mutated([data]))
        chosen.append((draw(names) if draw(st.integers(0, 5)) == 0 else name, data))
    chosen += draw(st.lists(st.tuples(names, st.binary(max_size=64)), max_size=2))
    chosen = draw(st.permutations(chosen))
    archive = bytearray(build_zip(chosen, draw(st.sampled_from(_COMPRESSIONS))))
    for _ in range(draw(st.integers(0, 3))):
        signature, fields = draw(st.sampled_from(_HEADERS))
        starts = [i for i in range(len(archive)) if archive.startswith(signature, i)]
        if not starts:
            continue
        start = draw(st.sampled_from(starts))
        if signature == b"PK\x03\x04" and draw(st.booleans()):
            # a byte of a member's compressed data (its first bytes: the compressor's own header)
            name_length, extra_length = struct.unpack_from("<HH", archive, start + 26)
            size = struct.unpack_from("<I", archive, start + 18)[0]
            begin = start + 30 + name_length + extra_length
            if size > 0 and begin + size <= len(archive):
                archive[begin + draw(st.integers(0, min(size, 32) - 1))] = draw(st.integers(0, 255))
            continue
        offset, fmt = draw(st.sampled_from(sorted(fields.items())))
        top = 0xFFFF if fmt == "<H" else 0xFFFFFFFF
        value = draw(st.sampled_from([0, 1, 9, 99, top, top - 1]) | st.integers(0, top))
        if start + offset + struct.calcsize(fmt) <= len(archive):
            struct.pack_into(fmt, archive, start + offset, value)
    if draw(st.integers(0, 4)) == 0:
        return draw(mutated([bytes(archive)]))
    return bytes(archive)


# --- XML feeds -------------------------------------------------------------------------------------

XML_TEXTS = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), max_size=40),
    st.sampled_from(
        [
            "市民投诉「王记面馆」后厨卫生差",
            "位于静安区南京西路1266号的王记面馆",
            "<p>a</p><script>x()</script><style>p{}</style>",
            "<script>" * 50,
            "&amp;&lt;&nbsp;&#0;&#xD800;&#1114112;&bogus;",
            "javascript:alert(1)",
            "https://example.cn/a",
            "positive",
            "负面",
            "None",
            "",
            "]]>",
        ]
    ),
    ISO_TEXTS,
    RFC822_TEXTS,
    big(b"x").map(lambda b: b.decode()),
    big("长<b>".encode()).map(lambda b: b.decode()),
)
_ENCODINGS = (
    "utf-8",
    "UTF-8",
    "us-ascii",
    "iso-8859-1",
    "GB2312",
    "gbk",
    "gb18030",
    "utf-16",
    "utf-16-le",
    "utf-32",
    "utf-7",
    "cp037",
    "big5",
    "shift_jis",
    "punycode",
    "idna",
    "rot13",
    "hex",
    "unicode_escape",
    "undefined",
    "no-such-codec",
)
_DECLARATIONS = (
    '<!DOCTYPE rss [<!ENTITY a "b">]>',
    '<!DOCTYPE rss SYSTEM "http://example.cn/rss.dtd">',
    "<!DOCTYPE rss>",
    '<!DOCTYPE rss [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]>',
    '<!DOCTYPE rss [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
)


_QUOTE = {'"': "&quot;"}


def _element(tag: str, text: str, how: int) -> str:
    if how == 0:
        return f"<{tag}>{escape(text)}</{tag}>"
    if how == 1 and "]]>" not in text:
        return f"<{tag}><![CDATA[{text}]]></{tag}>"
    if how == 2:
        return f"<{tag}/>"
    return f"<{tag}>{text}</{tag}>"  # raw: markup in the text is markup


@st.composite
def feed_document(draw: st.DrawFn) -> tuple[bytes, bool]:
    """An RSS 2.0 or Atom document built from drawn texts, in a drawn encoding (declared or not,
    truthfully or not), and whether a DOCTYPE was put in it (which must be refused)."""
    atom = draw(st.booleans())
    tags = (
        ["title", "id", "link", "summary", "content", "published", "updated", "category"]
        if atom
        else ["title", "guid", "link", "description", "content:encoded", "pubDate", "dc:date", "category"]
    )
    items = []
    for _ in range(draw(st.integers(0, 3))):
        parts = []
        for tag in draw(st.lists(st.sampled_from(tags), max_size=7)):
            text = draw(XML_TEXTS)
            how = draw(st.integers(0, 5))
            if atom and tag == "link":
                rel = draw(st.sampled_from(["alternate", "x"]))
                parts.append(f'<link rel="{rel}" href="{escape(text, _QUOTE)}"/>')
            elif atom and tag == "category":
                parts.append(f'<category term="{escape(text, _QUOTE)}"/>')
            else:
                parts.append(_element(tag, text, min(how, 3)))
        items.append(("<entry>{}</entry>" if atom else "<item>{}</item>").format("".join(parts)))
    if atom:
        body = '<feed xmlns="http://www.w3.org/2005/Atom">' + "".join(items) + "</feed>"
    else:
        body = (
            '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/" '
            'xmlns:dc="http://purl.org/dc/elements/1.1/"><channel>' + "".join(items) + "</channel></rss>"
        )
    if draw(st.integers(0, 4)) == 0:
        body = draw(st.sampled_from(["<html>", "<a>", "<rss><rss>"])) + body
    doctype = draw(st.integers(0, 5)) == 0
    if doctype:
        body = draw(st.sampled_from(_DECLARATIONS)) + body
    written = draw(st.sampled_from(("utf-8",) * len(_ENCODINGS) + _ENCODINGS))
    declared = draw(st.sampled_from((written,) * len(_ENCODINGS) + (None, *_ENCODINGS)))
    prolog = "" if declared is None else f'<?xml version="1.0" encoding="{declared}"?>'
    try:
        data = (prolog + body).encode(written, errors="xmlcharrefreplace")
    except (LookupError, UnicodeError, TypeError):
        data = (prolog + body).encode("utf-8", errors="surrogatepass")
    return data, doctype
