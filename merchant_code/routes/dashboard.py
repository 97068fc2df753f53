"""The supervision dashboard (managers of their area, admins of everything): JSON, CSV and a page.

`from` and `to` are days (YYYY-MM-DD) in the regulator's time zone, both included; without them
the last 30 days up to today. See merchant_code/dashboard.py for what each figure counts.
"""

from __future__ import annotations

import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import asyncpg
from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.openapi.spec import Example
from litestar.params import FromQuery, QueryParameter
from litestar.response import Template

from merchant_code import auth, dashboard
from merchant_code.errors import InvalidInput
from merchant_code.routes.auth import english

Lang = FromQuery[Literal["zh", "en"] | None]
# days are read by dashboard.choose_period, so that a bad one is refused naming `from` or `to`
# a day, or empty: the page's date inputs send an empty value when left blank, meaning the default
# (a bare `format: date` would say an empty value is refused, and it is not)
DAY_OR_EMPTY = {"anyOf": [{"format": "date"}, {"maxLength": 0}]}
From = Annotated[
    str | None,
    QueryParameter(
        name="from",
        schema_extra=DAY_OR_EMPTY,
        description="the first day counted (YYYY-MM-DD); empty or absent: 29 days before `to`",
    ),
]
To = Annotated[
    str | None,
    QueryParameter(
        name="to",
        schema_extra=DAY_OR_EMPTY,
        description="the last day counted, included (YYYY-MM-DD); empty or absent: today",
    ),
]
GroupBy = Annotated[
    str,
    QueryParameter(
        name="group",
        description="`department`, or `area` (the areas one level below yours)",
        examples=[Example(value="department"), Example(value="area")],
    ),
]


def _tz(state: State) -> str:
    tz: str = state.settings.timezone
    return tz


def _today(tz: str) -> datetime.date:
    return datetime.datetime.now(ZoneInfo(tz)).date()


async def _board(
    conn: asyncpg.Connection,
    principal: auth.Principal,
    state: State,
    first: str | datetime.date | None,
    last: str | datetime.date | None,
    group: str,
) -> dashboard.Dashboard:
    tz = _tz(state)
    if group not in dashboard.GROUPS:
        raise InvalidInput("group", "group by `department` or `area`")
    start, stop = dashboard.choose_period(first, last, _today(tz))
    return await dashboard.build(conn, principal, start, stop, group, tz)


@get("/api/v1/dashboard", opt={"access": "manager"}, tags=["dashboard"])
async def api_dashboard(
    state: State,
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    first: From = None,
    last: To = None,
    group: GroupBy = "department",
) -> dashboard.Dashboard:
    """Per department or per area of the caller's scope, over the cases opened in the period:
    opened, closed (resolved or closed now), overdue (ever marked overdue; `overdue_open`: still
    open), the median and 90th percentile of the hours to close, and the reopen rate (reopened /
    ever resolved); with the total. A period longer than 366 days or `from` after `to` is refused
    (422 naming `from`)."""
    return await _board(conn, principal, state, first, last, group)


@get(
    "/api/v1/dashboard.csv",
    opt={"access": "manager"},
    tags=["dashboard"],
    media_type="text/csv",
)
async def api_dashboard_csv(
    state: State,
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    first: From = None,
    last: To = None,
    group: GroupBy = "department",
) -> Response[str]:
    """The same figures as `/api/v1/dashboard`, one line per group and a `total` line (UTF-8 with
    a BOM, so that spreadsheet programs read the Chinese names)."""
    board = await _board(conn, principal, state, first, last, group)
    name = f"dashboard-{board.group}-{board.period.first}_{board.period.last}.csv"
    return Response(
        "\ufeff" + dashboard.to_csv(board),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )


@get("/dashboard", opt={"access": "manager"}, tags=["pages"], include_in_schema=False)
async def dashboard_page(
    request: Request[Any, Any, Any],
    state: State,
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    first: From = None,
    last: To = None,
    group: GroupBy = "department",
    lang: Lang = None,
) -> Template:
    """The form (period, grouping), the chart of opened / closed / overdue and of the hours to
    close, and the table; a bad value shows the form again with the reason (422)."""
    en = english(request, lang)
    error = None
    try:
        board = await _board(conn, principal, state, first, last, group)
    except InvalidInput as exc:
        error = {"field": exc.field, "detail": exc.detail}
        board = await _board(conn, principal, state, None, None, "department")
    query = {
        "from": board.period.first.isoformat(),
        "to": board.period.last.isoformat(),
        "group": board.group,
    }
    context = {
        "en": en,
        "board": board,
        "chart": dashboard.chart(board.rows, en),
        "error": error,
        "form": {"from": first or "", "to": last or "", "group": group} if error else query,
        "csv_url": "/api/v1/dashboard.csv?" + urlencode(query),
    }
    return Template("dashboard.html.j2", context=context, status_code=422 if error else 200)
