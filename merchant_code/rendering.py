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
from merchant_code.views import CitizenShop

TEMPLATES = Path(__file__).resolve().parent / "templates"
# where a page's sticker banner goes (templates/_sticker.html.j2): stored pages are cut here, so
# the bytes stored before the banner existed take it too
BANNER_AT = b"<body><main>"
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
    shop = msgspec.json.decode(doc_json, type=CitizenShop)
    if shop.revoked:
        html = {en: page("sticker_invalid.html.j2", en=en, revoked=True, status=410) for en in (False, True)}
        status = 410
    else:
        html = {
            en: page("scan.html.j2", shop=shop, view="citizen", en=en, preview=False, base=base)
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


def with_as_of(body: bytes, cut: int, kind: Literal["json", "zh", "en"], as_of: datetime.datetime) -> bytes:
    """An answer served while the database is unreachable: it says when its data was last
    confirmed (JSON: `as_of`; a page: a line above the sticker's status), spliced like the banner."""
    if cut < 0:
        return body
    stamp = as_of.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if kind == "json":
        note = b',"as_of":' + msgspec.json.encode(as_of.astimezone(datetime.UTC).isoformat())
    elif kind == "en":
        line = f'<p class="as-of" role="status">Data as of {stamp}: the register cannot be reached now.</p>'
        note = line.encode()
    else:
        note = f'<p class="as-of" role="status">数据截至 {stamp}：暂时无法连接登记系统。</p>'.encode()
    return b"".join((body[:cut], note, body[cut:]))
