"""The citizen's answers rendered outside any request: by the profile rebuild, into the profile.

A standalone Jinja environment over the same templates as the app (autoescaped like Litestar's
engine), so the bytes stored are the bytes a request would have rendered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import msgspec

from merchant_code.views import CitizenShop

TEMPLATES = Path(__file__).resolve().parent / "templates"
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
