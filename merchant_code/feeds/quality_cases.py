"""A source whose quality report fails gets a case for its owner department: once, and not again
while that case is open (a later check that still fails leaves it be; once it is resolved or
closed, a failing check opens a new one).

A case about a source has no shop: `case_file.feed_source_id` names the source, its category is
`data_quality`, and it lies in the source's area (`quality.area`) or the jurisdiction's district,
so that the staff of that area see it in their case lists and the dashboard counts it.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import msgspec

from merchant_code import db
from merchant_code.errors import DomainError
from merchant_code.feeds import quality

log = logging.getLogger(__name__)

JOB_SECONDS = 300


class Raised(msgspec.Struct, frozen=True):
    source: str
    case_number: str
    opened: bool  # False: an open case about the source already stood


async def raise_cases(
    conn: asyncpg.Connection, reports: list[quality.SourceReport], now: datetime.datetime
) -> list[Raised]:
    """A case for every failing report whose source has no open data-quality case."""
    raised = []
    sources = {r["name"]: r async for r in db.queries.list_quality_sources(conn, name=None)}
    for report in reports:
        source = sources.get(report.source)
        if report.ok or source is None:
            continue
        async with conn.transaction():
            await db.queries.lock_quality_case(conn, source_id=source["id"])
            open_case = await db.queries.get_open_quality_case(conn, source_id=source["id"])
            if open_case is not None:
                raised.append(Raised(report.source, open_case["public_id"], opened=False))
                continue
            row = await db.queries.create_quality_case(
                conn,
                source_id=source["id"],
                description=describe(report),
                area_path=source["case_area_path"],
                now=now,
            )
            await db.queries.add_event(
                conn,
                case_id=row["id"],
                actor=None,
                kind="opened",
                from_status=None,
                to_status="open",
                note=None,
                photo_id=None,
                public=False,
            )
        raised.append(Raised(report.source, row["public_id"], opened=True))
    return raised


def describe(report: quality.SourceReport) -> str:
    failing = [m for m in report.measures if m.ok is False]
    lines = "; ".join(f"{m.name}: {m.detail}" for m in failing)
    head = f"数据质量 / data quality: {report.source} ({report.kind}) fails {', '.join(report.failing)}"
    return f"{head} — {lines}"[:2000]


async def check(conn: asyncpg.Connection, now: datetime.datetime, name: str | None = None) -> list[Raised]:
    """Report on every source (or one) and raise the cases its failures call for."""
    reports = await quality.build(conn, name, now=now)
    return await raise_cases(conn, reports, now)


async def quality_job(state: Any) -> None:
    """Scheduled: every source's report; a failing one raises its case."""
    now = datetime.datetime.now(ZoneInfo(state.settings.timezone))
    async with db.acquire(state.pool) as conn:
        try:
            raised = await check(conn, now)
        except DomainError as exc:  # a source's bad `quality` config: said once per check
            log.warning("feed quality: %s", exc)
            return
    for r in raised:
        if r.opened:
            log.info("feed quality: source %s fails its thresholds: case %s", r.source, r.case_number)
