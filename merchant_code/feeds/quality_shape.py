"""The shape of a fetched page, for the quality report's schema drift: which columns, keys or
element names it has, and a coarse type for each (integer, decimal, date, text, empty; JSON also
boolean, object, list), read from a sample of its rows only, so it costs little beside the parse.

    {"inspections.csv": {"business_id": "text", "score": "integer", "date": "date"},
     "json": {"FHRSID": "integer", "RatingValue": "text", "scores.Hygiene": "integer"},
     "xml": {"title": "text", "pubDate": "text"}}

Names of CSV columns are compared without case or surrounding spaces (LIVES allows any case).
"""

from __future__ import annotations

import contextlib
import csv
import io
import re
import zipfile
from typing import Any
from xml.parsers import expat

import msgspec

from merchant_code.feeds import safe_xml
from merchant_code.feeds.base import FeedError

SAMPLE_ROWS = 200
SAMPLE_BYTES = 256 * 1024
Shape = dict[str, dict[str, str]]

_INTEGER = re.compile(r"^[+-]?\d+$")
_DECIMAL = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?$")
# YYYYMMDD (LIVES) or ISO, told from an eight-digit number by a plausible year, month and day
_DATE = re.compile(r"^(19|20)\d{2}(-?)(0[1-9]|1[0-2])\2(0[1-9]|[12]\d|3[01])([T ].*)?$")
_NULLS = frozenset({"", "null", "none", "n/a", "na"})


def shape_of(body: bytes) -> Shape:
    """Sniffed from the bytes: a zip's CSV members, a JSON document's records, an XML feed's
    items, else a CSV. A page that is none of these (or empty) has no shape."""
    try:
        shape = _sniffed(body)
    except (zipfile.BadZipFile, msgspec.DecodeError, UnicodeDecodeError, csv.Error):
        return {}
    return {member: columns for member, columns in shape.items() if columns}


def _sniffed(body: bytes) -> Shape:
    if body[:4] == b"PK\x03\x04":
        return _zip(body)
    head = body[:SAMPLE_BYTES].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head[:1] in (b"{", b"["):
        return {"json": _json(body)}
    if head[:1] == b"<":
        return {"xml": _xml(body)}
    return {"csv": _csv(head)} if head else {}


def merge_shapes(old: Shape, new: Shape) -> Shape:
    """A run's shape over its pages: every member and column seen, a known type over `empty`."""
    merged = {member: dict(columns) for member, columns in old.items()}
    for member, columns in new.items():
        into = merged.setdefault(member, {})
        for name, kind in columns.items():
            if into.get(name) in (None, "empty"):
                into[name] = kind
    return merged


def schema_changes(old: Shape, new: Shape) -> dict[str, list[str]]:
    """What appeared, vanished or changed type from `old` to `new` (an `empty` column, all of its
    sample blank, is no change of type). Empty lists are left out."""
    appeared, vanished, changed = [], [], []
    for member in sorted(set(old) | set(new)):
        before, after = old.get(member, {}), new.get(member, {})
        appeared += [f"{member}: {c}" for c in after if c not in before]
        vanished += [f"{member}: {c}" for c in before if c not in after]
        changed += [
            f"{member}: {c} ({before[c]} -> {after[c]})"
            for c in after
            if c in before and before[c] != after[c] and "empty" not in (before[c], after[c])
        ]
    found = {"appeared": appeared, "vanished": vanished, "changed": changed}
    return {k: v for k, v in found.items() if v}


def _zip(body: bytes) -> Shape:
    shape: Shape = {}
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        for info in archive.infolist():
            name = info.filename.rsplit("/", 1)[-1].lower()
            if name.endswith(".csv") and not info.is_dir():
                with archive.open(info) as member:
                    shape[name] = _csv(member.read(SAMPLE_BYTES))
    return shape


def _csv(head: bytes) -> dict[str, str]:
    text = head.decode("utf-8-sig", errors="replace")
    if len(head) >= SAMPLE_BYTES:  # the last line may be cut: leave it out
        text = text[: text.rfind("\n") + 1] or text
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        return {}
    names = [h.strip().lower() for h in header]
    samples: list[list[str]] = [[] for _ in names]
    for n, row in enumerate(reader):
        if n >= SAMPLE_ROWS:
            break
        for i, cell in enumerate(row[: len(names)]):
            samples[i].append(cell)
    return {name: _text_kind(values) for name, values in zip(names, samples, strict=True) if name}


def _text_kind(values: list[str]) -> str:
    known = [v.strip() for v in values if v.strip().lower() not in _NULLS]
    if not known:
        return "empty"
    for kind, pattern in (("date", _DATE), ("integer", _INTEGER), ("decimal", _DECIMAL)):
        if all(pattern.match(v) for v in known):
            return kind
    return "text"


def _json(body: bytes) -> dict[str, str]:
    records = _records(msgspec.json.decode(body))
    kinds: dict[str, list[str]] = {}
    for record in records[:SAMPLE_ROWS]:
        for key, kind in _flat(record):
            kinds.setdefault(key, []).append(kind)
    return {key: _one_kind(found) for key, found in kinds.items()}


def _records(document: Any) -> list[dict[str, Any]]:
    """The list of objects a JSON page carries: itself, or the longest such list among its values
    (FHRS `establishments`, a registry's `items`), looked for two levels down."""
    if isinstance(document, list):
        return [r for r in document if isinstance(r, dict)]
    if not isinstance(document, dict):
        return []
    best: list[dict[str, Any]] = []
    for value in document.values():
        found = _records(value) if isinstance(value, list) else []
        if isinstance(value, dict):
            found = max((_records(v) for v in value.values() if isinstance(v, list)), key=len, default=[])
        if len(found) > len(best):
            best = found
    return best


def _flat(record: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, value in record.items():
        if isinstance(value, dict) and not prefix:
            out += _flat(value, f"{key}.")
        else:
            out.append((prefix + str(key), _value_kind(value)))
    return out


def _value_kind(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "decimal"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "list"
    return _text_kind([str(value)])


def _one_kind(found: list[str]) -> str:
    kinds = set(found) - {"empty"}
    if not kinds:
        return "empty"
    if kinds == {"integer", "decimal"}:
        return "decimal"
    return kinds.pop() if len(kinds) == 1 else "text"


class _Stop(Exception):
    pass


def _xml(body: bytes) -> dict[str, str]:
    """The element names under a feed's items (RSS `item`, Atom `entry`), namespaces dropped. Read
    with expat by hand, refusing a DOCTYPE or ENTITY declaration before anything is expanded (as
    rss.py does); a document that breaks off keeps what was read before."""
    names: dict[str, list[str]] = {}
    stack: list[str] = []
    text: list[str] = []
    items = 0

    def start(name: str, _: Any) -> None:
        stack.append(name.rsplit("}", 1)[-1])
        text.clear()

    def end(_: str) -> None:
        nonlocal items
        tag = stack.pop()
        if stack and stack[-1] in ("item", "entry"):
            names.setdefault(tag, []).append(_text_kind(["".join(text)]))
        elif tag in ("item", "entry"):
            items += 1
            if items >= SAMPLE_ROWS:
                raise _Stop
        text.clear()

    parser = safe_xml.parser(namespace_separator="}")
    parser.buffer_text = False
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text.append
    with contextlib.suppress(_Stop, FeedError, expat.ExpatError):
        parser.Parse(body[: SAMPLE_BYTES * 4], False)
    return {name: _one_kind(kinds) for name, kinds in names.items()}
