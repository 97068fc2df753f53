"""GET /s/{code}: what a citizen sees when scanning a shop's sticker."""

from __future__ import annotations

import datetime
from typing import Any, Literal

import asyncpg
from litestar import Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Template

from merchant_code import db
from merchant_code.codes import parse_shop_code
from merchant_code.errors import NotFound
from merchant_code.views import CitizenShop


async def citizen_view(conn: asyncpg.Connection, raw_code: str) -> CitizenShop:
    code = parse_shop_code(raw_code)
    row = await db.queries.get_citizen_shop_by_code(conn, code=code, today=datetime.date.today())
    shop = db.one(row, CitizenShop)
    if shop is None:
        raise NotFound("no shop has this code: the sticker is not valid")
    return shop


@get("/s/{code:str}", opt={"access": "public"}, tags=["scan"])
async def scan(
    request: Request[Any, Any, Any],
    conn: NamedDependency[asyncpg.Connection],
    code: FromPath[str],
    lang: FromQuery[Literal["zh", "en"] | None] = None,
) -> Response[Any]:
    """The shop's public record: JSON for `Accept: application/json`, a page otherwise."""
    shop = await citizen_view(conn, code)
    if "application/json" in request.headers.get("accept", ""):
        return Response(shop)
    english = lang == "en" or (lang is None and request.headers.get("accept-language", "").startswith("en"))
    return Template("scan.html.j2", context={"shop": shop, "en": english})
