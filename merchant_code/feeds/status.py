"""What `merchant-code feeds status [SOURCE] [--verbose]` prints.

One line per source and one per failure: a failure shows the first line of its error only,
clipped (a database error stored whole once carried the failing row, with personal data, on its
following lines). `--verbose` adds the last runs, the quarantine grouped by reason with counts,
and a few samples of each. Everything that comes from a feed is printed escaped (no control
character reaches the terminal) and defused (no line a spreadsheet would run as a formula).
"""

from __future__ import annotations

import base64
from typing import Any

import asyncpg

from merchant_code import db
from merchant_code.csvsafe import defuse
from merchant_code.feeds.quarantine import one_line

RUNS = 10
SAMPLES = 3
ERROR_CHARS = 200
RAW_CHARS = 120


def text(value: str, limit: int) -> str:
    """Feed text for a terminal line: one line, control characters escaped, clipped, defused."""
    line = one_line(value)
    return defuse(line if len(line) <= limit else line[:limit] + "...")


def _error(error: str) -> str:
    return text(error.split("\n", 1)[0].strip(), ERROR_CHARS)


def source_lines(row: dict[str, Any]) -> list[str]:
    lag = "never" if row["lag"] is None else f"{int(row['lag'].total_seconds() // 60)} min ago"
    paused = f", paused until {row['paused_until']:%Y-%m-%d %H:%M}" if row["paused_until"] else ""
    last = "no run yet" if row["status"] is None else (
        f"last run {row['status']}: fetched {row['fetched']} = {row['inserted']} new"
        f" + {row['updated']} changed + {row['unchanged']} unchanged + {row['quarantined']} quarantined"
    )  # fmt: skip
    lines = [
        f"{row['name']:<20} {row['kind']:<16} data {lag}; {last}; {row['rejects']} in quarantine;"
        f" {row['failures']} failure(s) in a row{paused}"
    ]
    if row["status"] == "failed":
        lines.append(f"  failed: {_error(row['error'] or 'no reason recorded')}")
    return lines


async def lines(conn: asyncpg.Connection, name: str | None, verbose: bool) -> list[str] | None:
    """The status to print, or None when `name` names no source."""
    rows = [dict(r) async for r in db.queries.feed_status(conn)]
    if name is not None:
        rows = [r for r in rows if r["name"] == name]
        if not rows:
            return None
    if not rows:
        return ["no feed sources (merchant-code feeds add NAME --kind K --url U)"]
    out: list[str] = []
    for row in rows:
        out += source_lines(row)
        if verbose:
            out += await details(conn, row["name"])
    return out


async def details(conn: asyncpg.Connection, name: str) -> list[str]:
    source = await db.queries.get_feed_source(conn, name=name)
    if source is None:  # removed meanwhile
        return []
    out = [f"  last {RUNS} runs, newest first:"]
    for run in [r async for r in db.queries.list_feed_runs(conn, source_id=source["id"], n=RUNS)]:
        took = (
            f" in {(run['finished_at'] - run['started_at']).total_seconds():.1f} s"
            if run["finished_at"]
            else ""
        )
        out.append(
            f"    {run['started_at']:%Y-%m-%d %H:%M:%S} {run['status']}{took}: fetched {run['fetched']}"
            f" = {run['inserted']} new + {run['updated']} changed + {run['unchanged']} unchanged"
            f" + {run['quarantined']} quarantined" + (f"; {_error(run['error'])}" if run["error"] else "")
        )
    reasons = [
        r async for r in db.queries.list_feed_reject_reasons(conn, source_id=source["id"], samples=SAMPLES)
    ]
    resolved = await db.queries.count_resolved_feed_rejects(conn, source_id=source["id"])
    waiting = sum(r["records"] for r in reasons)
    out.append(f"  quarantine: {waiting} record(s) waiting, {resolved} resolved since (they landed later)")
    for r in reasons:
        out.append(
            f"    {text(r['reason'], 300)}: {r['records']} record(s), seen {r['seen']} time(s),"
            f" last {r['last_seen_at']:%Y-%m-%d %H:%M}"
        )
        for sample in r["samples"] or []:
            raw = base64.b64decode(sample["raw"]).decode("utf-8", "backslashreplace")
            ident = text(sample["external_id"], 60) if sample["external_id"] else "(no id)"
            out.append(f"      {ident} (seen {sample['seen']}): {text(raw, RAW_CHARS)}")
    return out
