"""The data-quality report of the feed sources, for managers and admins: JSON and a page with
small charts. See merchant_code/feeds/quality.py for what each measure means."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import asyncpg
from litestar import Request, get
from litestar.di import NamedDependency
from litestar.params import FromQuery, QueryParameter
from litestar.response import Template

from merchant_code.errors import NotFound
from merchant_code.feeds import quality, quality_charts
from merchant_code.routes.auth import english

Lang = FromQuery[Literal["zh", "en"] | None]
SourceName = Annotated[
    str | None,
    QueryParameter(name="source", max_length=200, description="one source's name; absent: every source"),
]


async def _reports(conn: asyncpg.Connection, source: str | None) -> list[quality.SourceReport]:
    reports = await quality.build(conn, source)
    if source is not None and not reports:
        raise NotFound(f"no feed source is named {source!r}")
    return reports


@get("/api/v1/manage/feeds/quality", opt={"access": "manager"}, tags=["feeds"])
async def api_feed_quality(
    conn: NamedDependency[asyncpg.Connection], source: SourceName = None
) -> list[quality.SourceReport]:
    """Each source's data-quality report: coverage, freshness, schema drift, value drift,
    duplicates and quarantine, each measure with its value, threshold and verdict (`ok` null:
    too little data to judge); `failing` names the measures below their thresholds."""
    return await _reports(conn, source)


@get("/manage/feeds", opt={"access": "manager"}, tags=["pages"], include_in_schema=False)
async def feed_quality_page(
    request: Request[Any, Any, Any],
    conn: NamedDependency[asyncpg.Connection],
    source: SourceName = None,
    lang: Lang = None,
) -> Template:
    """One card per source: its verdict, its measures, and the charts of its pulls, its
    quarantine and its scores."""
    reports = await _reports(conn, source)
    context = {
        "en": english(request, lang),
        "items": [{"report": r, "chart": quality_charts.charts(r)} for r in reports],
    }
    return Template("feeds_quality.html.j2", context=context)
