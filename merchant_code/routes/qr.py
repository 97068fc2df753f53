"""A shop's sticker and poster images, and the key set that lets a phone check a sticker offline."""

from __future__ import annotations

from typing import Any, Literal

import asyncpg
import msgspec
from litestar import Request, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response.base import ASGIResponse

from merchant_code import qr, stickers

DAY = 86_400
KEYSET_SECONDS = 300  # a revoked key or code should reach phones within minutes


def answer(request: Request[Any, Any, Any], image: stickers.Rendered, max_age: int) -> ASGIResponse:
    """The bytes with a strong ETag, or 304 with no body when the caller has them already; handed
    to the server as they are (no Response conversion for a cached image)."""
    headers = {
        "ETag": image.etag,
        "Cache-Control": f"public, max-age={max_age}",
        "X-Content-Type-Options": "nosniff",
    }
    if _matches(request.headers.get("if-none-match"), image.etag):
        return ASGIResponse(body=b"", status_code=304, headers=headers, media_type=image.media_type)
    return ASGIResponse(body=image.data, headers=headers, media_type=image.media_type)


def _matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    # If-None-Match compares weakly (RFC 9110 13.1.2): W/"x" matches "x"
    return header.strip() == "*" or any(t.strip().removeprefix("W/") == etag for t in header.split(","))


@get("/s/{code:str}/sticker.svg", opt={"access": "public"}, tags=["qr"])
async def sticker_svg(request: Request[Any, Any, Any], state: State, code: FromPath[str]) -> ASGIResponse:
    """The shop's QR sticker (30 mm QR, the code printed under it) as SVG."""
    image = await stickers.shop_image(state.pool, state.settings, code, "sticker.svg")
    return answer(request, image, DAY)


@get("/s/{code:str}/sticker.png", opt={"access": "public"}, tags=["qr"])
async def sticker_png(request: Request[Any, Any, Any], state: State, code: FromPath[str]) -> ASGIResponse:
    """The shop's QR sticker as a 1-bit PNG that prints 30 mm wide."""
    image = await stickers.shop_image(state.pool, state.settings, code, "sticker.png")
    return answer(request, image, DAY)


@get("/s/{code:str}/poster.svg", opt={"access": "public"}, tags=["qr"])
async def poster_svg(
    request: Request[Any, Any, Any],
    state: State,
    code: FromPath[str],
    size: FromQuery[Literal["a4", "a5"]] = "a4",
) -> ASGIResponse:
    """A print-ready poster: shop name, trade, grade face, the QR and how to use it."""
    kind: stickers.Kind = "poster-a5.svg" if size == "a5" else "poster-a4.svg"
    image = await stickers.shop_image(state.pool, state.settings, code, kind)
    return answer(request, image, DAY)


@get("/.well-known/merchant-code-keys.json", opt={"access": "public"}, tags=["qr"])
async def key_set(
    request: Request[Any, Any, Any], conn: NamedDependency[asyncpg.Connection]
) -> ASGIResponse:
    """Every sticker key (active, retired, revoked) and every revoked code, for offline checks."""
    data = msgspec.json.encode(await qr.keyset_document(conn))
    image = stickers.Rendered(data=data, etag=stickers.etag_of(data), media_type="application/json")
    return answer(request, image, KEYSET_SECONDS)
