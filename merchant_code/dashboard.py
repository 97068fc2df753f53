"""The supervision dashboard: how the cases of a period fared, per department or per area.

Definitions (the same for the JSON, the CSV and the page):

- **period**: the cases *opened* from the first day to the last day, both included, days in the
  regulator's time zone (`settings.timezone`); `figures` itself takes the half-open
  [start, end). At most `MAX_DAYS` days; by default the last `DEFAULT_DAYS` days up to today.
- **opened**: the cases opened in the period.
- **closed**: of those, the ones that reached the end of the lifecycle and are there now: status
  `resolved` or `closed` (a reopened case counts as open again until it is resolved again).
- **time to close** (median and 90th percentile, hours): from `opened_at` to the resolution
  (`resolved_at`, else `closed_at`: the moment the case left the department's hands, as the
  case pages count it), over the closed cases; `percentile_cont`, so a median of an even count is
  the mean of the two middle values. None when nothing closed.
- **overdue**: the cases that went past their due time before being resolved: the escalation
  marks them (`case_file.overdue`, which stays set once the case is handed to the manager), so
  an overdue case that closed later still counts. **overdue_open**: of those, the ones still
  not closed: what needs chasing today.
- **reopen rate**: the cases reopened at least once (`reopened_count > 0`) over the cases that
  reached a resolution at least once (closed now, or reopened: a case is reopened only after
  a resolution), so it stays between 0 and 1. None when nothing was resolved.

Scope: a manager sees the cases whose area (the shop's area when the case opened) is theirs
or below it, an admin every case. Grouped by area, the groups are the areas one level below
the scope (a district manager: the subdistricts; an admin: the districts); cases recorded at
the scope's own level form a row of their own, and cases without an area (admin only) one more.
"""

from __future__ import annotations

import datetime
import io
from typing import Any, Literal
from zoneinfo import ZoneInfo

import asyncpg
import msgspec

from merchant_code import auth, csvsafe, db
from merchant_code.errors import Forbidden, InvalidInput

Group = Literal["department", "area"]
GROUPS: tuple[Group, ...] = ("department", "area")
MAX_DAYS = 366
DEFAULT_DAYS = 30
FIRST_DAY, LAST_DAY = datetime.date(1900, 1, 1), datetime.date(2999, 12, 31)
WORK_MEM = "64MB"
# For the one statement, until its transaction ends (inside a request: a savepoint of the
# request's transaction; measured by bench/dashboard_bench.py, a year of 1,000,000 cases):
# - work_mem: the cases are sorted by group and each group's hours are sorted; with the default
#   4 MB those sorts spill to disk;
# - plan_cache_mode: a plan for each call's own parameters. The generic plan of a prepared
#   statement (taken after five calls on a pooled connection) cannot tell a day from a year: it
#   guessed a few rows and a bitmap scan, half again slower than reading the table;
# - parallel_tuple_cost: the scan and the sort by group are split between processes (the hours
#   of a group can only be ordered in one); the default cost of handing a row over (0.1) makes
#   the planner keep a year's million narrow rows in one process, a third slower on two cores.
SETTINGS = (
    f"SET LOCAL work_mem = '{WORK_MEM}'; SET LOCAL plan_cache_mode = force_custom_plan;"
    " SET LOCAL parallel_tuple_cost = 0.01"
)


class Row(msgspec.Struct, frozen=True):
    """One group's figures (or the total's: key None, `total` true)."""

    key: str | None  # department code or area code; None: no department / no area recorded
    name: str
    name_en: str
    opened: int
    closed: int
    overdue: int
    overdue_open: int
    reopened: int
    median_hours: float | None
    p90_hours: float | None
    reopen_rate: float | None
    total: bool = False
    own_level: bool = False  # grouped by area: the cases recorded at the scope's own area


class Figures(msgspec.Struct, frozen=True):
    rows: list[Row]
    total: Row


class Period(msgspec.Struct, frozen=True, rename={"first": "from", "last": "to"}):
    first: datetime.date  # the first day counted
    last: datetime.date  # the last day counted (included)
    days: int
    timezone: str
    start: datetime.datetime  # the first instant counted
    end: datetime.datetime  # the first instant no longer counted


class Scope(msgspec.Struct, frozen=True):
    code: str
    name: str
    name_en: str


class Dashboard(msgspec.Struct, frozen=True):
    period: Period
    group: Group
    scope: Scope | None  # None: every area (an admin)
    rows: list[Row]
    total: Row


# -- the period -----------------------------------------------------------------------------------


def _parse(field: str, value: str | datetime.date | None) -> datetime.date | None:
    if value is None or isinstance(value, datetime.date):
        return value
    if not value.strip():
        return None
    try:
        day = datetime.date.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInput(field, f"`{field}` is a date written YYYY-MM-DD") from None
    # far from both ends of the calendar, so that the default period and the day after stay in it
    if not FIRST_DAY <= day <= LAST_DAY:
        raise InvalidInput(field, f"`{field}` is a day from {FIRST_DAY} to {LAST_DAY}")
    return day


def choose_period(
    first: str | datetime.date | None, last: str | datetime.date | None, today: datetime.date
) -> tuple[datetime.date, datetime.date]:
    """The days asked for (both included), or the last DEFAULT_DAYS days up to today; refused
    (naming the field) when `from` is after `to` or the period is longer than MAX_DAYS."""
    start, stop = _parse("from", first), _parse("to", last)
    if stop is None:
        stop = max(today, start) if start is not None else today
    if start is None:
        start = stop - datetime.timedelta(days=DEFAULT_DAYS - 1)
    if start > stop:
        raise InvalidInput("from", "`from` must be on or before `to`")
    if (stop - start).days + 1 > MAX_DAYS:
        raise InvalidInput("from", f"the period can be at most {MAX_DAYS} days (from and to included)")
    return start, stop


def _instant(day: datetime.date, tz: str) -> datetime.datetime:
    return datetime.datetime.combine(day, datetime.time.min, tzinfo=ZoneInfo(tz))


def scope_prefix(principal: auth.Principal) -> str | None:
    """The area path a caller's figures are limited to; None for an admin (everything)."""
    if principal.role == "admin":
        return None
    if principal.role != "manager" or principal.area_path is None:
        raise Forbidden("the dashboard is for managers of an area and for admins")
    return principal.area_path


# -- the figures ----------------------------------------------------------------------------------

_NO_GROUP = {
    "department": ("未分派部门", "No department"),
    "area": ("未记录区域", "No area recorded"),
}


def query_params(
    prefix: str | None, start: datetime.date, end: datetime.date, group: Group, tz: str
) -> dict[str, Any]:
    """The named parameters of `dashboard_figures`: the prefix arrives ready-made (`below`, and
    `part`, the path segment one level below the scope), so no plan builds a string per row."""
    return {
        "start": _instant(start, tz),
        "end": _instant(end, tz),
        "prefix": prefix,
        "below": None if prefix is None else prefix + ".",
        "part": 1 if prefix is None else prefix.count(".") + 2,
        "grp": group,
    }


async def figures(
    conn: asyncpg.Connection,
    prefix: str | None,
    start: datetime.date,
    end: datetime.date,
    group: Group,
    tz: str,
) -> Figures:
    """The figures of the cases opened in [start, end) (days in `tz`) whose area is `prefix` or
    below it (every case for None), per `group`, with the total: one SQL statement (run with
    SETTINGS)."""
    if group not in GROUPS:
        raise InvalidInput("group", "group by `department` or `area`")
    params = query_params(prefix, start, end, group, tz)
    async with conn.transaction():  # a savepoint inside a request's transaction
        await conn.execute(SETTINGS)
        records = [r async for r in db.queries.dashboard_figures(conn, **params)]
    rows: list[Row] = []
    total: Row | None = None
    scope_code = prefix.rsplit(".", 1)[-1] if prefix else None
    for r in records:
        values: dict[str, Any] = dict(r)
        is_total = values.pop("is_total")
        values.pop("resolved_ever")
        if is_total:
            total = Row(**{**values, "key": None, "name": "合计", "name_en": "Total"}, total=True)
            continue
        own = group == "area" and scope_code is not None and values["key"] == scope_code
        if values["key"] is None:
            values["name"], values["name_en"] = _NO_GROUP[group]
        elif values["name"] is None:
            values["name"] = values["name_en"] = values["key"]
        if own:
            values["name"] = f"{values['name']}（本级）"
            values["name_en"] = f"{values['name_en']} (itself)"
        rows.append(Row(**values, own_level=own))
    assert total is not None  # the empty grouping set always answers one row
    return Figures(rows=rows, total=total)


async def build(
    conn: asyncpg.Connection,
    principal: auth.Principal,
    first: datetime.date,
    last: datetime.date,
    group: Group,
    tz: str,
) -> Dashboard:
    """The dashboard of the caller's scope for the days `first`..`last` (both included)."""
    prefix = scope_prefix(principal)
    end = last + datetime.timedelta(days=1)
    found = await figures(conn, prefix, first, end, group, tz)
    scope = None
    if prefix is not None:
        area = await db.queries.dashboard_scope_area(conn, path=prefix)
        code = prefix.rsplit(".", 1)[-1]
        scope = Scope(code, area["name"], area["name_en"]) if area else Scope(code, code, code)
    period = Period(
        first=first,
        last=last,
        days=(last - first).days + 1,
        timezone=tz,
        start=_instant(first, tz),
        end=_instant(end, tz),
    )
    return Dashboard(period=period, group=group, scope=scope, rows=found.rows, total=found.total)


# -- CSV ------------------------------------------------------------------------------------------

CSV_COLUMNS = (
    "group",
    "key",
    "name",
    "name_en",
    "opened",
    "closed",
    "overdue",
    "overdue_open",
    "reopened",
    "reopen_rate",
    "median_hours",
    "p90_hours",
    "from",
    "to",
)


def _cell(value: float | None) -> str:
    return "" if value is None else csvsafe.Numeral(f"{value:g}")


def to_csv(board: Dashboard) -> str:
    """The rows and the total (key `total`), one line each, with the period on every line."""
    out = io.StringIO()
    writer = csvsafe.writer(out)
    writer.writerow(CSV_COLUMNS)
    for row in [*board.rows, board.total]:
        key = "total" if row.total else (row.key or "")
        writer.writerow(
            [
                board.group,
                key,
                row.name,
                row.name_en,
                row.opened,
                row.closed,
                row.overdue,
                row.overdue_open,
                row.reopened,
                _cell(row.reopen_rate),
                _cell(row.median_hours),
                _cell(row.p90_hours),
                board.period.first.isoformat(),
                board.period.last.isoformat(),
            ]
        )
    return out.getvalue()


# -- the chart ------------------------------------------------------------------------------------

CHART_WIDTH = 320  # the viewBox; the page scales it to the card (about 310 px on a 390 px phone)
NAME_HEIGHT = 19  # a group's name above its bar
BAR_HEIGHT = 14
TEXT_HEIGHT = 18  # its numbers below the bar
ROW_GAP = 10
STEP = NAME_HEIGHT + BAR_HEIGHT + TEXT_HEIGHT + ROW_GAP


class Bar(msgspec.Struct, frozen=True):
    """One group's drawing (viewBox units): its name, its bar's segments and its numbers."""

    label: str
    name_y: float  # baselines
    bar_y: float  # top of the bar
    text_y: float
    closed_w: float  # closed (green)
    open_w: float  # still open, not overdue (grey)
    overdue_w: float  # still open and past due (red)
    counts: str  # the numbers under the bar, also what a screen reader says
    median_w: float  # hours to close: the median (solid) ...
    p90_w: float  # ... and the 90th percentile (lighter)
    hours: str


class Chart(msgspec.Struct, frozen=True):
    width: int
    height: int
    bars: list[Bar]
    max_opened: int
    max_hours: float


def _width(n: float, scale: float) -> float:
    return round(CHART_WIDTH * n / scale, 1)


def chart(rows: list[Row], en: bool) -> Chart:
    """Horizontal bars, one per group, all on one scale: the cases opened, split into closed
    (green), still open (grey) and still open past due (red); and, for the second chart, the
    hours to close (the median solid, the 90th percentile lighter behind it)."""
    max_opened = max((r.opened for r in rows), default=0) or 1
    max_hours = max((r.p90_hours or 0.0 for r in rows), default=0.0) or 1.0
    bars: list[Bar] = []
    for i, r in enumerate(rows):
        top = i * STEP
        open_ok = max(0, r.opened - r.closed - r.overdue_open)
        timed = r.median_hours is not None and r.p90_hours is not None
        if en:
            counts = f"{r.opened} opened · {r.closed} closed · {r.overdue} overdue ({r.overdue_open} open)"
            hours = f"median {r.median_hours:g} h · p90 {r.p90_hours:g} h" if timed else "nothing closed"
        else:
            counts = f"新增 {r.opened} · 办结 {r.closed} · 超期 {r.overdue}（未结 {r.overdue_open}）"
            hours = f"中位 {r.median_hours:g} 小时 · P90 {r.p90_hours:g} 小时" if timed else "暂无办结"
        bars.append(
            Bar(
                label=r.name_en if en else r.name,
                name_y=top + NAME_HEIGHT - 4,
                bar_y=top + NAME_HEIGHT,
                text_y=top + NAME_HEIGHT + BAR_HEIGHT + TEXT_HEIGHT - 4,
                closed_w=_width(r.closed, max_opened),
                open_w=_width(open_ok, max_opened),
                overdue_w=_width(r.overdue_open, max_opened),
                counts=counts,
                median_w=_width(r.median_hours or 0.0, max_hours),
                p90_w=_width(r.p90_hours or 0.0, max_hours),
                hours=hours,
            )
        )
    height = max(1, len(rows)) * STEP
    return Chart(width=CHART_WIDTH, height=height, bars=bars, max_opened=max_opened, max_hours=max_hours)
