"""Benchmark: the supervision dashboard's figures over 1,000,000 cases (target: under 1 s).

    .venv/bin/python bench/dashboard_bench.py                           # the issue's scale
    .venv/bin/python bench/dashboard_bench.py --cases 50000 --pg-data /tmp/dash-pg   # smoke
    .venv/bin/python bench/dashboard_bench.py --explain                 # and the slowest plan

Its own embedded PostgreSQL in --pg-data (bench/var/pg-dashboard, kept between runs so the seed is
paid once; not bench/var/pg, which scan_bench.py uses). Migrates, makes a district with 20
subdistricts (five grids each) and seeds --cases case_file rows in SQL (generate_series, in
batches; a second run adds only what is missing): opened over the last 365 days, 5 departments,
a realistic status mix (most closed, the newest still open), lognormal hours to resolve (median
about two days), ~5% overdue, ~3% reopened, 30% of them filed at grid level. VACUUM ANALYZE.
(The dates are those of the seed's day: a run weeks later finds fewer cases in its last 365 days.)

Then `dashboard.figures` (the service's one statement) as an admin (every area) and as the
district's manager, grouped by department and by area, over the last 30 and the last 365 days:
one warm-up, then --runs timed runs each; median and max seconds. The baseline in the same run is
a bare `count(*)` of the period's cases. Target: every median and max under 1 s. A table is
printed and one JSON line appended to bench/results/dashboard.jsonl; its `foreign_cores` say how
many cores other processes took during each measurement (the machine has two: a test suite
running beside the benchmark makes every figure slower).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from merchant_code import dashboard, db, migrate
from merchant_code.embedded import embedded_postgres
from merchant_code.errors import StartupError
from merchant_code.migrate import MigrationError

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results" / "dashboard.jsonl"
DISTRICT = "310104"
SUBDISTRICTS = 20
GRIDS = 5
TARGET_SECONDS = 1.0
BATCH = 100_000


def note(message: str) -> None:
    print(f"[dashboard_bench] {message}", flush=True)


# -- the data -----------------------------------------------------------------------------------

AREAS = f"""
INSERT INTO area (level, code, path, name, name_en)
VALUES ('district', '{DISTRICT}', '{DISTRICT}', '徐汇区', 'Xuhui')
ON CONFLICT (code) DO NOTHING;
INSERT INTO area (parent_id, level, code, path, name, name_en)
SELECT d.id, 'subdistrict', d.code || lpad(s::text, 3, '0'), d.path || '.' || d.code || lpad(s::text, 3, '0'),
       '第' || s || '街道', 'Subdistrict ' || s
FROM area d, generate_series(1, {SUBDISTRICTS}) s
WHERE d.code = '{DISTRICT}'
ON CONFLICT (code) DO NOTHING;
INSERT INTO area (parent_id, level, code, path, name, name_en)
SELECT a.id, 'grid', a.code || lpad(g::text, 3, '0'), a.path || '.' || a.code || lpad(g::text, 3, '0'),
       a.name || '第' || g || '网格', a.name_en || ' grid ' || g
FROM area a, generate_series(1, {GRIDS}) g
WHERE a.level = 'subdistrict' AND a.path LIKE '{DISTRICT}.%'
ON CONFLICT (code) DO NOTHING;
"""

# One batch of cases, $1 .. $2 (numbers), opened over the 365 days before $3. Per row: u1 .. u8
# uniform draws; the hours to resolve are lognormal (Box-Muller), median 48 h, sigma 1.1.
CASES = f"""
INSERT INTO case_file (public_id, source, category, department, status, opened_at, resolved_at, closed_at,
                       sla_due_at, overdue, reopened_count, area_path, via)
SELECT 'BENCH-' || n,
       (ARRAY['complaint', 'inspection', 'feed_signal', 'expiry', 'manual'])[1 + n % 5],
       (ARRAY['hygiene', 'food_safety', 'price', 'service', 'licence'])[1 + (n / 5) % 5],
       (ARRAY['food_safety', 'food_safety', 'pricing', 'licensing', 'consumer', 'enforcement'])
           [1 + floor(u1 * 6)::int],
       status,
       opened,
       CASE WHEN status IN ('resolved', 'closed') THEN resolved END,
       CASE WHEN status = 'closed' THEN least(resolved + u5 * interval '72 hours', $3::timestamptz) END,
       opened + interval '72 hours',
       u6 < 0.05,
       CASE WHEN u7 < 0.03 THEN 1 + floor(u7 * 100)::int % 2 ELSE 0 END,
       '{DISTRICT}.{DISTRICT}' || lpad(sub::text, 3, '0')
           || CASE WHEN grid > 0 THEN '.{DISTRICT}' || lpad(sub::text, 3, '0') || lpad(grid::text, 3, '0')
                   ELSE '' END,
       'system'
FROM (
    SELECT n, u1, u5, u6, u7, u8, opened,
           least(opened + exp(ln(48) + 1.1 * sqrt(-2 * ln(1 - u3)) * cos(2 * pi() * u4)) * interval '1 hour',
                 $3::timestamptz) AS resolved,
           CASE WHEN $3::timestamptz - opened < interval '2 days' THEN
                     (ARRAY['open', 'assigned', 'in_progress', 'resolved'])[1 + floor(u2 * 4)::int]
                WHEN u2 < 0.72 THEN 'closed' WHEN u2 < 0.88 THEN 'resolved' WHEN u2 < 0.93 THEN 'in_progress'
                WHEN u2 < 0.97 THEN 'assigned' ELSE 'open' END AS status,
           1 + floor(u5 * {SUBDISTRICTS})::int AS sub,
           CASE WHEN u8 < 0.3 THEN 1 + floor(u8 / 0.3 * {GRIDS})::int ELSE 0 END AS grid
    FROM (
        SELECT n, random() AS u1, random() AS u2, random() AS u3, random() AS u4, random() AS u5,
               random() AS u6, random() AS u7, random() AS u8,
               $3::timestamptz - random() * interval '365 days' AS opened
        FROM generate_series($1::bigint, $2::bigint) n
    ) draws
) c
ON CONFLICT (public_id) DO NOTHING
"""


async def prepare(conn: asyncpg.Connection, cases: int, now: datetime.datetime) -> dict[str, Any]:
    applied = await migrate.migrate(conn)
    if applied:
        note(f"applied {len(applied)} migration(s): {', '.join(applied)}")
    await conn.execute(AREAS)
    have: int = await conn.fetchval("SELECT count(*) FROM case_file WHERE public_id LIKE 'BENCH-%'")
    seeded = None
    if have >= cases:
        note(f"{have:,} cases already seeded: no seed")
    else:
        note(f"seeding cases {have + 1:,} .. {cases:,} in batches of {BATCH:,} ...")
        started = time.perf_counter()
        # the numbers already there are skipped (ON CONFLICT): an interrupted seed goes on
        for first in range(1, cases + 1, BATCH):
            last = min(cases, first + BATCH - 1)
            if last <= have:
                continue
            await conn.execute("SELECT setseed($1)", (first % 1000) / 1000)
            await conn.execute(CASES, first, last, now)
            print(f"    {last:,} ({time.perf_counter() - started:.0f} s)", flush=True)
        seeded = round(time.perf_counter() - started, 1)
        note(f"seeded in {seeded} s; VACUUM ANALYZE ...")
        await conn.execute("VACUUM ANALYZE case_file")
        await conn.execute("VACUUM ANALYZE area")
    total: int = await conn.fetchval("SELECT count(*) FROM case_file")
    size = await conn.fetchrow(
        "SELECT pg_size_pretty(pg_table_size('case_file')) AS heap,"
        " pg_size_pretty(pg_relation_size('case_file_dashboard_idx')) AS dashboard_index"
    )
    return {"cases": total, "seed_seconds": seeded, **(dict(size) if size else {})}


# -- measuring ----------------------------------------------------------------------------------


async def timed(runs: int, call: Any) -> dict[str, Any]:
    await call()  # warm-up
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        await call()
        seconds.append(time.perf_counter() - started)
    return {
        "median_s": round(statistics.median(seconds), 4),
        "max_s": round(max(seconds), 4),
        "min_s": round(min(seconds), 4),
    }


async def measure(conn: asyncpg.Connection, args: argparse.Namespace, watch: CpuWatch) -> dict[str, Any]:
    tz = args.timezone
    today = datetime.datetime.now(ZoneInfo(tz)).date()
    end = today + datetime.timedelta(days=1)
    periods = {"30d": end - datetime.timedelta(days=30), "365d": end - datetime.timedelta(days=365)}
    callers = {"admin": None, "district_manager": DISTRICT}
    results: dict[str, Any] = {}
    for period, start in periods.items():
        lo = datetime.datetime.combine(start, datetime.time.min, tzinfo=ZoneInfo(tz))
        hi = datetime.datetime.combine(end, datetime.time.min, tzinfo=ZoneInfo(tz))

        async def bare(lo: datetime.datetime = lo, hi: datetime.datetime = hi) -> None:
            await conn.fetchval(
                "SELECT count(*) FROM case_file WHERE opened_at >= $1 AND opened_at < $2", lo, hi
            )

        in_period: int = await conn.fetchval(
            "SELECT count(*) FROM case_file WHERE opened_at >= $1 AND opened_at < $2", lo, hi
        )
        before = watch.snapshot()
        results[f"baseline_count_{period}"] = {**await timed(args.runs, bare), "rows": in_period}
        results[f"baseline_count_{period}"]["foreign_cores"] = watch.foreign_cores(before)
        note(f"baseline count(*) {period}: {results[f'baseline_count_{period}']}")
        for who, prefix in callers.items():
            for group in dashboard.GROUPS:

                async def call(
                    prefix: str | None = prefix, start: datetime.date = start, group: dashboard.Group = group
                ) -> dashboard.Figures:
                    return await dashboard.figures(conn, prefix, start, end, group, tz)

                key = f"{who}_{group}_{period}"
                found = await call()
                before = watch.snapshot()
                results[key] = {
                    **await timed(args.runs, call),
                    "foreign_cores": watch.foreign_cores(before),
                    "groups": len(found.rows),
                    "opened": found.total.opened,
                }
                note(f"{key}: {results[key]}")
    return results


async def explain(conn: asyncpg.Connection, args: argparse.Namespace) -> str:
    """The plan of the heaviest call (the district's manager by area over 365 days), with the
    settings `dashboard.figures` runs it with."""
    end = datetime.datetime.now(ZoneInfo(args.timezone)).date() + datetime.timedelta(days=1)
    params = dashboard.query_params(DISTRICT, end - datetime.timedelta(days=365), end, "area", args.timezone)
    # aiosql has turned :names into $n in the order they first appear
    order = db.queries.driver_adapter.var_sorted["dashboard_figures"]
    async with conn.transaction():
        await conn.execute(dashboard.SETTINGS)
        rows = await conn.fetch(
            "EXPLAIN (ANALYZE, BUFFERS) " + db.queries.dashboard_figures.sql, *[params[k] for k in order]
        )
    return "\n".join(r[0] for r in rows)


class CpuWatch:
    """How many cores processes outside the benchmark took while it measured (a test suite or
    another benchmark on the same machine): all busy time (/proc/stat) less this process's and
    the PostgreSQL server's (the postmaster, its children, and the children it reaped: parallel
    workers). Linux only; elsewhere None."""

    def __init__(self, postmaster: int | None) -> None:
        self.postmaster = postmaster
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def _ticks(self, stat: str, reaped: bool) -> tuple[int, int]:
        fields = stat.rpartition(")")[2].split()
        ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if reaped else 0)
        return int(fields[1]), ticks

    def snapshot(self) -> tuple[int, int, float] | None:
        try:
            cpu = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
            ours = self._ticks(Path(f"/proc/{os.getpid()}/stat").read_text(), False)[1]
            for stat in Path("/proc").glob("[0-9]*/stat"):
                pid = int(stat.parent.name)
                if self.postmaster is None or pid == os.getpid():
                    continue
                try:
                    ppid, ticks = self._ticks(stat.read_text(), pid == self.postmaster)
                except (OSError, ValueError, IndexError):
                    continue
                if pid == self.postmaster or ppid == self.postmaster:
                    ours += ticks
        except (OSError, ValueError):
            return None
        busy = sum(cpu) - cpu[3] - (cpu[4] if len(cpu) > 4 else 0)
        return busy, ours, time.monotonic()

    def foreign_cores(self, before: tuple[int, int, float] | None) -> float | None:
        after = self.snapshot()
        if before is None or after is None or after[2] <= before[2]:
            return None
        other = (after[0] - before[0]) - (after[1] - before[1])
        return round(max(0, other) / self.hz / (after[2] - before[2]), 2)


# -- the run ------------------------------------------------------------------------------------


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def postmaster(args: argparse.Namespace) -> int | None:
    """The embedded server's postmaster pid (None with --database-url: the watch then says nothing)."""
    if args.database_url:
        return None
    try:
        return int((Path(args.pg_data) / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
    except OSError:
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


async def run(url: str, args: argparse.Namespace) -> dict[str, Any]:
    conn = await db.connect(url, timeout=60)
    try:
        now = datetime.datetime.now(datetime.UTC)
        data = await prepare(conn, args.cases, now)
        settings = {
            name: await conn.fetchval(f"SHOW {name}")
            for name in ("server_version", "shared_buffers", "work_mem", "max_parallel_workers_per_gather")
        }
        results = await measure(conn, args, CpuWatch(postmaster(args)))
        plan = await explain(conn, args) if args.explain else None
    finally:
        await conn.close()
    if plan:
        print(plan)
    checks = {k: v for k, v in results.items() if not k.startswith("baseline")}
    worst = max(v["max_s"] for v in checks.values())
    passed = worst < TARGET_SECONDS
    print()
    print(f"{'what':<36} {'median s':>9} {'max s':>9} {'groups':>7} {'opened':>9} {'other':>6}")
    for key, v in results.items():
        other = "-" if v.get("foreign_cores") is None else f"{v['foreign_cores']:.2f}"
        print(
            f"{key:<36} {v['median_s']:>9.4f} {v['max_s']:>9.4f} {v.get('groups', '-')!s:>7}"
            f" {v.get('opened', v.get('rows', '-'))!s:>9} {other:>6}"
        )
    print("(other: cores that processes outside the benchmark took during the runs; 0 on a quiet machine)")
    print(f"worst max {worst:.4f} s (target < {TARGET_SECONDS:g} s): {'PASS' if passed else 'FAIL'}")
    return {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "processor": _cpu_model(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
        },
        "postgres": {**settings, "dashboard_work_mem": dashboard.WORK_MEM},
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "data": data,
        "runs": args.runs,
        "results": results,
        "worst_max_s": worst,
        "target_s": TARGET_SECONDS,
        "note": args.note,
        "plan": plan,
        "pass": passed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", type=int, default=1_000_000, help="cases to seed (once per database)")
    parser.add_argument("--runs", type=int, default=10, help="timed runs of each query after one warm-up")
    parser.add_argument("--database-url", help="use this server instead of the embedded one")
    parser.add_argument(
        "--pg-data",
        default=str(BENCH / "var" / "pg-dashboard"),
        help="the embedded server's folder, kept between runs",
    )
    parser.add_argument("--timezone", default="Asia/Shanghai", help="the regulator's time zone")
    parser.add_argument(
        "--explain", action="store_true", help="print EXPLAIN (ANALYZE, BUFFERS) of the heaviest call"
    )
    parser.add_argument("--note", default=None, help="a word on this run, kept in the results")
    parser.add_argument(
        "--no-save", action="store_true", help="do not append to bench/results/dashboard.jsonl"
    )
    args = parser.parse_args()
    try:
        if args.database_url:
            result = asyncio.run(run(args.database_url, args))
        else:
            note(f"embedded PostgreSQL in {args.pg_data}")
            with embedded_postgres(Path(args.pg_data)) as url:
                result = asyncio.run(run(url, args))
    except KeyboardInterrupt:
        note("interrupted")
        sys.exit(130)
    except (OSError, StartupError, MigrationError, asyncpg.PostgresError) as exc:
        note(f"failed: {exc}")
        sys.exit(1)
    if not args.no_save:
        RESULTS.parent.mkdir(exist_ok=True)
        with RESULTS.open("a") as out:
            out.write(json.dumps(result, ensure_ascii=False) + "\n")
        note(f"appended to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
