"""Benchmark: one policy pushed to a whole trade of a 1,000,000-shop district, inbox only.

    .venv/bin/python bench/policy_push.py [--trade catering] [--pg-data bench/var/pg]
    .venv/bin/python bench/policy_push.py --workers 2        # inbox delivery on two connections

Uses the database of bench/scan_bench.py (its district must be seeded: 1,000,000 shops there).
The policy targets the district's root area and one trade (by default the trade whose shop count
is closest to 300,000; the counts per trade are printed). It is created through
`policies.create` by an admin principal (the account `bench-admin` is made if no admin exists),
then the service's own code is timed:

1. materialisation: `policies.send_due` (one INSERT ... SELECT FROM policy_audience(...) per due
   policy, with the delivery table's foreign keys; before migration 0037 also a statement
   trigger that queued the shops' profiles for a rebuild, now none) -- target under 30 s;
2. inbox delivery: `policies.deliver_inbox` (batches of UPDATE ... FOR UPDATE SKIP LOCKED)
   until no inbox row of the policy is pending -- target under 120 s; with
   --workers N, N asyncio tasks each on its own connection run it at the same time.

The baseline is the time of `SELECT count(*) FROM policy_audience(...)` for the same audience.
Delivery channels that are enabled are disabled for the run (inbox only) and enabled again after.
The counts are checked: deliveries == the audience, all of them delivered.

Tidying (so later benches on this database are not disturbed): the profile rebuilds the run
queued (none since migration 0037: notices are joined to the views, not copied) are not part of
this measure -- their number is reported, then the `profile_dirty` rows
queued during the run are deleted (rows queued before it are kept). The run's own policy and
deliveries are deleted too (unless --keep), so shops' inboxes do not grow with every run; the
audit events of its creation stay (the audit trail is append-only).

Prints the figures and appends one JSON line to bench/results/policy_push.jsonl.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import resource
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from merchant_code import auth, db, migrate, policies
from merchant_code.embedded import embedded_postgres

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results" / "policy_push.jsonl"
TZ = "Asia/Shanghai"
TARGET_MATERIALIZE_S = 30.0
TARGET_INBOX_S = 120.0
ADMIN_LOGIN = "bench-admin"


def note(message: str) -> None:
    print(f"[policy_push] {message}", flush=True)


def wait_for_other_bench(seconds: float, every: float = 20.0) -> None:
    """bench/lives_ingest.py may be using the same database: wait until it has finished."""
    deadline = time.monotonic() + seconds
    while True:
        others = [p for p in _pids_running("lives_ingest.py") if p != os.getpid()]
        if not others:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"bench/lives_ingest.py is still running (pid {others}): try later")
        note(f"bench/lives_ingest.py is running (pid {others}); waiting {every:.0f} s ...")
        time.sleep(every)


def _pids_running(script: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.decode(errors="replace").endswith(script) for a in argv[1:]):
            found.append(int(entry.name))
    return found


async def admin_account(conn: asyncpg.Connection) -> int:
    """An enabled admin account (the first one), or `bench-admin` made for the bench."""
    found: int | None = await conn.fetchval(
        "SELECT id FROM account WHERE role = 'admin' AND disabled_at IS NULL ORDER BY id LIMIT 1"
    )
    if found is not None:
        return found
    made: int = await conn.fetchval(
        "INSERT INTO account (login, role, display_name, password_hash)"
        " VALUES ($1, 'admin', 'Bench admin', 'not-a-login') RETURNING id",
        ADMIN_LOGIN,
    )
    note(f"made the admin account {ADMIN_LOGIN} (id {made})")
    return made


async def timed_audience(
    conn: asyncpg.Connection, trades: list[str], area_ids: list[int], today: datetime.date
) -> tuple[int, float]:
    started = time.perf_counter()
    count: int = await db.queries.count_audience(
        conn, trades=trades, area_ids=area_ids, filters={}, today=today
    )
    return count, time.perf_counter() - started


async def deliver_all(url: str, workers: int) -> list[int]:
    """`deliver_inbox` on `workers` connections at once; rows delivered by each."""

    async def one() -> int:
        conn = await db.connect(url)
        try:
            return await policies.deliver_inbox(conn)
        finally:
            await conn.close()

    return list(await asyncio.gather(*(one() for _ in range(workers))))


async def main_async(args: argparse.Namespace, url: str) -> dict[str, Any]:
    conn = await db.connect(url)
    try:
        applied = await migrate.migrate(conn)
        if applied:
            note(f"applied {len(applied)} migration(s): {', '.join(applied)}")
        shops_total: int = await conn.fetchval("SELECT count(*) FROM shop")
        if shops_total == 0:
            raise SystemExit("the database has no shops: run bench/scan_bench.py --shops 1000000 first")
        per_trade = {
            r["trade"]: r["n"]
            for r in await conn.fetch("SELECT trade, count(*) AS n FROM shop GROUP BY 1 ORDER BY 2 DESC")
        }
        note(f"{shops_total:,} shops; per trade:")
        for trade, n in per_trade.items():
            print(f"    {trade:<15} {n:>9,}", flush=True)
        trade = args.trade or min(per_trade, key=lambda t: abs(per_trade[t] - 300_000))
        if trade not in per_trade:
            raise SystemExit(f"no shop has the trade {trade!r}")
        district = await conn.fetchrow(
            "SELECT id, code, path FROM area WHERE level = 'district' ORDER BY id LIMIT 1"
        )
        if district is None:
            raise SystemExit("the database has no district area")
        today = datetime.datetime.now(datetime.UTC).astimezone(ZoneInfo(TZ)).date()

        # nothing else in the way: other due policies and pending inbox rows are counted (they
        # would be sent and delivered too), enabled channels disabled for the run
        other_due: int = await conn.fetchval(
            "SELECT count(*) FROM policy WHERE status = 'scheduled' AND next_at <= now()"
        )
        pending_before: int = await conn.fetchval(
            "SELECT count(*) FROM delivery WHERE channel = 'inbox' AND status IN ('pending', 'failed')"
        )
        dirty_before: int = await conn.fetchval("SELECT count(*) FROM profile_dirty")
        channels: list[str] = [
            r["name"] for r in await conn.fetch("SELECT name FROM delivery_channel WHERE enabled")
        ]
        if other_due or pending_before:
            note(f"before the run: {other_due} other due policies, {pending_before:,} pending inbox rows")
        if channels:
            note(f"disabling {len(channels)} delivery channel(s) for the run: {', '.join(channels)}")
            await conn.execute("UPDATE delivery_channel SET enabled = false WHERE name = ANY($1)", channels)

        account_id = await admin_account(conn)
        principal = auth.Principal(account_id=account_id, login="bench", role="admin", session_id="bench")
        policy_public_id: str | None = None
        started_run = await conn.fetchval("SELECT clock_timestamp()")
        try:
            targeted, audience_s = await timed_audience(conn, [trade], [district["id"]], today)
            note(
                f"audience of {trade} in {district['code']}: {targeted:,} shops ({audience_s:.2f} s to count)"
            )

            policy_public_id = await policies.create(
                conn,
                principal,
                policies.PolicyIn(
                    title=f"bench: a notice to every {trade} shop",
                    body_md="A policy sent by **bench/policy_push.py**.",
                    area_codes=[district["code"]],
                    trades=[trade],
                ),
                tz=TZ,
            )
            policy_id: int = await conn.fetchval(
                "SELECT id FROM policy WHERE public_id::text = $1", policy_public_id
            )

            note("materialising (policies.send_due) ...")
            started = time.perf_counter()
            materialized = await policies.send_due(conn, TZ)
            materialize_s = time.perf_counter() - started
            note(
                f"  {materialized:,} rows in {materialize_s:.2f} s"
                f" ({materialized / materialize_s:,.0f} rows/s;"
                f" target < {TARGET_MATERIALIZE_S:.0f} s)"
            )

            note(f"delivering the inbox (policies.deliver_inbox on {args.workers} connection(s)) ...")
            started = time.perf_counter()
            by_worker = await deliver_all(url, args.workers)
            inbox_s = time.perf_counter() - started
            delivered_all = sum(by_worker)
            note(
                f"  {delivered_all:,} rows in {inbox_s:.2f} s ({delivered_all / inbox_s:,.0f} rows/s;"
                f" per connection {by_worker}; target < {TARGET_INBOX_S:.0f} s)"
            )

            counts = await conn.fetchrow(
                "SELECT count(*) AS rows, count(DISTINCT shop_id) AS shops,"
                " count(*) FILTER (WHERE status = 'delivered') AS delivered,"
                " count(*) FILTER (WHERE channel <> 'inbox') AS channel_rows"
                " FROM delivery WHERE policy_id = $1",
                policy_id,
            )
            assert counts is not None
            dirty_after: int = await conn.fetchval("SELECT count(*) FROM profile_dirty")
            queued: int = await conn.fetchval(
                "SELECT count(*) FROM profile_dirty WHERE marked_at >= $1", started_run
            )
        finally:
            if channels:
                await conn.execute(
                    "UPDATE delivery_channel SET enabled = true WHERE name = ANY($1)", channels
                )
                note(f"enabled the channel(s) again: {', '.join(channels)}")

        # tidy up: the run's own rows, then the profile rebuilds it queued (not part of this measure)
        removed = 0
        if policy_public_id is not None and not args.keep:
            async with conn.transaction():
                removed = int(
                    (await conn.execute("DELETE FROM delivery WHERE policy_id = $1", policy_id)).split()[-1]
                )
                await conn.execute("DELETE FROM policy WHERE id = $1", policy_id)
        dropped = int(
            (await conn.execute("DELETE FROM profile_dirty WHERE marked_at >= $1", started_run)).split()[-1]
        )
        note(
            f"tidied: {removed:,} of the run's deliveries and its policy deleted"
            f"{' (kept: --keep)' if args.keep else ''}; {dropped:,} queued profile rebuilds deleted"
            f" (not part of this measure; {dirty_before:,} queued before the run kept)"
        )
    finally:
        await conn.close()

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ok_counts = (
        counts["rows"] == targeted == counts["shops"] == counts["delivered"] and not counts["channel_rows"]
    )
    return {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cores": len(os.sched_getaffinity(0))},
        "shops_total": shops_total,
        "shops_per_trade": per_trade,
        "trade": trade,
        "area": district["code"],
        "targeted": targeted,
        "audience_count_seconds": round(audience_s, 2),
        "materialized_rows": materialized,
        "materialize_seconds": round(materialize_s, 2),
        "materialize_rows_per_second": round(materialized / materialize_s),
        "inbox_delivered_rows": delivered_all,
        "inbox_seconds": round(inbox_s, 2),
        "inbox_rows_per_second": round(delivered_all / inbox_s),
        "inbox_workers": args.workers,
        "inbox_batch": policies.INBOX_BATCH,
        "inbox_rows_per_worker": by_worker,
        "deliveries": counts["rows"],
        "delivered": counts["delivered"],
        "counts_match": ok_counts,
        "other_due_policies_before": other_due,
        "pending_inbox_before": pending_before,
        "channels_disabled_for_run": channels,
        "profile_dirty_before": dirty_before,
        "profile_dirty_after": dirty_after,
        "profile_rebuilds_queued_by_run": queued,
        "profile_rebuilds_deleted": dropped,
        "run_rows_deleted": removed,
        "targets": {"materialize_seconds": TARGET_MATERIALIZE_S, "inbox_seconds": TARGET_INBOX_S},
        "pass": ok_counts and materialize_s < TARGET_MATERIALIZE_S and inbox_s < TARGET_INBOX_S,
        "peak_rss_mb": round(peak_mb),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trade", help="default: the trade with closest to 300,000 shops")
    parser.add_argument("--workers", type=int, default=1, help="connections running deliver_inbox at once")
    parser.add_argument("--keep", action="store_true", help="keep the run's policy and deliveries")
    parser.add_argument("--pg-data", default=str(BENCH / "var" / "pg"))
    parser.add_argument("--database-url")
    parser.add_argument(
        "--wait", type=float, default=1200.0, help="seconds to wait for bench/lives_ingest.py to finish"
    )
    args = parser.parse_args()

    async def go(url: str) -> dict[str, Any]:
        return await main_async(args, url)

    if args.database_url:
        result = asyncio.run(go(args.database_url))
    else:
        wait_for_other_bench(args.wait)
        with embedded_postgres(Path(args.pg_data)) as url:
            result = asyncio.run(go(url))
    print(json.dumps(result, ensure_ascii=False))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as out:
        out.write(json.dumps(result, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
