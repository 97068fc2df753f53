"""The citizen's answers rendered outside any request: by the profile rebuild, into the profile.

A standalone Jinja environment over the same templates as the app (autoescaped like Litestar's
engine), so the bytes stored are the bytes a request would have rendered.
"""

from __future__ import annotations

import datetime
import functools
from pathlib import Path
from typing import Any, Literal

import jinja2
import msgspec

from merchant_code.genuine import GENUINE, Status
from merchant_code.views import CitizenRecord

TEMPLATES = Path(__file__).resolve().parent / "templates"
# where a page's sticker banner goes (templates/_sticker.html.j2): stored pages are cut here, so
# the bytes stored before the banner existed take it too
BANNER_AT = b"<body><main>"
# where a stored page's trade notices go (scan.html.j2): they are joined when it is served
NOTICES_AT = b"<!--notices-->"
_CODE = "\x00"  # stands for the shop's code in a banner rendered once for every shop
_env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, auto_reload=False)


class Answers(msgspec.Struct, frozen=True):
    json: bytes
    html_zh: bytes
    html_en: bytes
    status: int  # 200, or 410 for a revoked sticker


def page(template: str, **context: Any) -> bytes:
    return _env.get_template(template).render(**context).encode()


def citizen_answers(doc_json: str | bytes, base: str) -> Answers:
    """The stored answers of a citizen document: its notices are left out (the JSON has no
    `notices`, the pages a NOTICES_AT mark), to be joined when served (notices.py)."""
    shop = msgspec.json.decode(doc_json, type=CitizenRecord)
    if shop.revoked:
        html = {en: page("sticker_invalid.html.j2", en=en, revoked=True, status=410) for en in (False, True)}
        status = 410
    else:
        html = {
            en: page("scan.html.j2", shop=shop, view="citizen", en=en, preview=False, base=base, stored=True)
            for en in (False, True)
        }
        status = 200
    return Answers(json=msgspec.json.encode(shop), html_zh=html[False], html_en=html[True], status=status)


def banner_cut(kind: Literal["json", "zh", "en"], body: bytes) -> int:
    """Where the sticker's status goes into a stored answer: inside the JSON object, after the
    page's BANNER_AT; -1 for none (the page of a revoked code, which is all warning already)."""
    if kind == "json":
        return len(body) - 1 if body.endswith(b"}") else -1
    at = body.find(BANNER_AT)
    return -1 if at < 0 else at + len(BANNER_AT)


@functools.cache
def banner(kind: Literal["json", "zh", "en"], status: Status) -> tuple[bytes, ...]:
    """The status as spliced into an answer, rendered once per worker: the pieces to join with
    the shop's code."""
    if kind == "json":
        doc = {"status": status, "genuine": GENUINE[status]}
        return (b',"sticker":' + msgspec.json.encode(doc),)
    html = page("_sticker.html.j2", sticker=status, sticker_code=_CODE, en=kind == "en")
    return tuple(html.split(_CODE.encode()))


def with_banner(body: bytes, cut: int, kind: Literal["json", "zh", "en"], status: Status, code: str) -> bytes:
    """A stored answer with its sticker status spliced in at `cut` (banner_cut): a copy, never a
    render."""
    if cut < 0:
        return body
    return b"".join((body[:cut], code.encode().join(banner(kind, status)), body[cut:]))


def notices_cut(kind: Literal["json", "zh", "en"], body: bytes, cut: int) -> int:
    """Where a stored answer's notices go: with the banner in the JSON object, at the page's
    NOTICES_AT mark; -1 for an answer that has its notices already (rendered before migration
    0037) or no place for them."""
    if cut < 0:
        return -1
    if kind == "json":
        return -1 if b'"notices":' in body else cut
    return body.find(NOTICES_AT)


def compose(
    body: bytes,
    cut: int,
    ncut: int,
    kind: Literal["json", "zh", "en"],
    status: Status,
    code: str,
    notices: bytes,
    as_of: datetime.datetime | None = None,
) -> bytes:
    """A stored answer as served: the sticker's status (and, while the database is unreachable,
    the time its data was last confirmed) at `cut`, the notices joined in place of the page's
    mark at `ncut`. Copies, never a render."""
    if cut < 0:
        return body
    head = code.encode().join(banner(kind, status))
    if as_of is not None:
        head = _as_of_note(kind, as_of) + head
    if ncut < 0:
        return b"".join((body[:cut], head, body[cut:]))
    after = ncut if kind == "json" else ncut + len(NOTICES_AT)  # the page's mark goes
    if ncut >= cut:
        return b"".join((body[:cut], head, body[cut:ncut], notices, body[after:]))
    return b"".join((body[:ncut], notices, body[after:cut], head, body[cut:]))


def _as_of_note(kind: Literal["json", "zh", "en"], as_of: datetime.datetime) -> bytes:
    """An answer served while the database is unreachable says when its data was last confirmed
    (JSON: `as_of`; a page: a line above the sticker's status)."""
    stamp = as_of.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if kind == "json":
        note = b',"as_of":' + msgspec.json.encode(as_of.astimezone(datetime.UTC).isoformat())
    elif kind == "en":
        line = f'<p class="as-of" role="status">Data as of {stamp}: the register cannot be reached now.</p>'
        note = line.encode()
    else:
        note = f'<p class="as-of" role="status">数据截至 {stamp}：暂时无法连接登记系统。</p>'.encode()
    return note
