"""`/`: in demo mode, where to look (scan pages and the demo logins); otherwise nothing is here."""

from __future__ import annotations

from typing import Any, Literal

import asyncpg
from litestar import Request, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromQuery
from litestar.response import Template

from merchant_code import demo_info
from merchant_code.errors import NotFound
from merchant_code.routes.auth import english


@get("/", opt={"access": "public"}, tags=["pages"], include_in_schema=False)
async def home_page(
    request: Request[Any, Any, Any],
    state: State,
    conn: NamedDependency[asyncpg.Connection],
    lang: FromQuery[Literal["zh", "en"] | None] = None,
) -> Template:
    settings = state.settings
    if not settings.demo:  # a real deployment's pages start at a sticker's /s/{code}
        raise NotFound("nothing is served at /: scan a sticker (/s/{code})")
    context = {
        "en": english(request, lang),
        "base": settings.base_url,
        "shops": await demo_info.shops(conn),
        "logins": demo_info.logins(settings.demo_seed),
    }
    return Template("demo_home.html.j2", context=context)
