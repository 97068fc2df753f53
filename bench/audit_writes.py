"""Benchmark: audited writes a second, against the same writes without an audit row.

    .venv/bin/python bench/audit_writes.py                        # 32 connections, 10 s a phase
    PYTHONPATH=/path/to/other/checkout .venv/bin/python bench/audit_writes.py --label main

One process tree: the embedded PostgreSQL in --pg-data (or --database-url), a fresh database made
for the run and migrated by the code under test (whichever merchant_code is imported: set
PYTHONPATH to measure another checkout), dropped after; --procs client processes holding
--connections pooled connections in all, under the service's role, each connection looping one
transaction after another for --seconds:

- bare: a tiny write (one row into auth_attempt), measured before and after the audited phase
  (the machine is shared: the baseline is their mean, and both are reported);
- audited: the same tiny write + `audit.append`, as every write of the service does. Where the
  code seals (audit.seal), a sealer runs in the parent every SEAL_SECONDS as the service's job
  does, and the sealing lag (the oldest unsealed row's age at each seal, and how long the last
  rows took to be sealed after the writers stopped) is reported.

After the run the chain is verified: it must count every audited write. Reported: writes/s and
p50/p99 transaction latency (begin to commit) of each phase, and audited / bare. Target (issue
17): >= 1,000 audited writes/s. One JSON line is appended to bench/results/audit_writes.jsonl.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack, suppress
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

import merchant_code
from merchant_code import audit, db, migrate
from merchant_code.embedded import embedded_postgres

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results" / "audit_writes.jsonl"
WARM_UP = 1.0  # seconds of each phase not counted (pools filling, caches warming)


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


# -- the client processes -----------------------------------------------------------------------


async def _client(
    url: str, role: str | None, conns: int, audited: bool, start: float, stop: float, tag: int
) -> Any:
    pool = await db.create_pool(url, min_size=conns, max_size=conns, role=role)
    latencies: list[float] = []

    async def loop(lane: int) -> None:
        n = 0
        async with db.acquire(pool) as conn:
            await asyncio.sleep(max(0.0, start - time.time()))  # all processes begin together
            while (began := time.time()) < stop:
                key = f"login:bench{tag}.{lane}.{n}"
                async with conn.transaction():
                    await conn.execute("INSERT INTO auth_attempt (key) VALUES ($1)", key)
                    if audited:
                        await audit.append(
                            conn, actor=None, action="bench.write", object_type="n", object_id=key
                        )
                if began >= start + WARM_UP:
                    latencies.append(time.time() - began)
                n += 1

    try:
        await asyncio.gather(*(loop(lane) for lane in range(conns)))
    finally:
        await pool.close()
    return latencies


def client(url: str, role: str | None, conns: int, audited: bool, start: float, stop: float, tag: int,
           out: Connection) -> None:  # fmt: skip
    out.send(asyncio.run(_client(url, role, conns, audited, start, stop, tag)))


# -- the sealer (the service's job, in the parent) ----------------------------------------------


async def _sealer(url: str, role: str | None, until: asyncio.Event, lags: list[float]) -> None:
    conn = await db.connect(url)
    try:
        if role:
            await conn.execute(f'SET ROLE "{role}"')
        while not until.is_set():
            pending = await audit.pending(conn)
            if pending.oldest is not None:
                lags.append((datetime.datetime.now(datetime.UTC) - pending.oldest).total_seconds())
            await audit.seal(conn)
            with suppress(TimeoutError):
                await asyncio.wait_for(until.wait(), timeout=audit.SEAL_SECONDS)
    finally:
        await conn.close()


async def _phase(
    url: str, role: str | None, args: argparse.Namespace, audited: bool, tag: int
) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    start = time.time() + 3.0  # every process connected by then
    stop = start + args.seconds
    share = [args.connections // args.procs + (i < args.connections % args.procs) for i in range(args.procs)]
    pipes, procs = [], []
    for i, conns in enumerate(share):
        here, there = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=client, args=(url, role, conns, audited, start, stop, tag * 100 + i, there))
        proc.start()
        pipes.append(here)
        procs.append(proc)
    sealing = audited and hasattr(audit, "seal")
    until, lags = asyncio.Event(), []
    sealer = asyncio.create_task(_sealer(url, role, until, lags)) if sealing else None
    latencies: list[float] = []
    for here in pipes:
        latencies.extend(await asyncio.to_thread(here.recv))
    for proc in procs:
        proc.join()
    writers_done = time.time()
    result: dict[str, Any] = {
        "writes": len(latencies),
        "writes_per_s": round(len(latencies) / (args.seconds - WARM_UP), 1),
        "p50_ms": round((percentile(latencies, 50) or 0) * 1000, 2),
        "p99_ms": round((percentile(latencies, 99) or 0) * 1000, 2),
    }
    if sealer is not None:
        until.set()
        await sealer
        conn = await db.connect(url)
        try:
            while (await audit.pending(conn)).count:  # what the next seal would find
                await audit.seal(conn)
        finally:
            await conn.close()
        result["sealing_lag_s"] = {
            "max": round(max(lags), 2) if lags else 0.0,
            "median": round(statistics.median(lags), 2) if lags else 0.0,
            "last_rows_sealed_after_s": round(time.time() - writers_done, 2),
        }
    return result


# -- the run ------------------------------------------------------------------------------------


async def _database(server: str, name: str, sql: str) -> None:
    conn = await asyncpg.connect(server)
    try:
        await conn.execute(sql.format(name=name))
    finally:
        await conn.close()


async def bench(server_url: str, args: argparse.Namespace) -> dict[str, Any]:
    name = f"mc_audit_bench_{os.getpid()}"
    await _database(server_url, name, "CREATE DATABASE {name}")
    url = urlunsplit(urlsplit(server_url)._replace(path="/" + name))
    try:
        conn = await db.connect(url)
        try:
            await migrate.migrate(conn)
        finally:
            await conn.close()
        role = await db.app_role(url)
        bare_before = await _phase(url, role, args, audited=False, tag=1)
        audited = await _phase(url, role, args, audited=True, tag=2)
        bare_after = await _phase(url, role, args, audited=False, tag=3)
        conn = await db.connect(url)
        try:
            began = time.time()
            checked, broken = await audit.verify(conn)
            verify_s = time.time() - began
            rows = await conn.fetchval("SELECT count(*) FROM audit_event WHERE action = 'bench.write'")
        finally:
            await conn.close()
    finally:
        await _database(server_url, name, "DROP DATABASE {name} WITH (FORCE)")
    bare = (bare_before["writes_per_s"] + bare_after["writes_per_s"]) / 2
    return {
        "bench": "audit_writes",
        "at": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S%z"),
        "label": args.label,
        "commit": _commit(),
        "sealing": hasattr(audit, "seal"),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "connections": args.connections,
        "procs": args.procs,
        "seconds": args.seconds,
        "bare_before": bare_before,
        "audited": audited,
        "bare_after": bare_after,
        "bare_writes_per_s": round(bare, 1),
        "ratio": round(audited["writes_per_s"] / bare, 3) if bare else None,
        "verify": {
            "rows": rows,
            "checked": checked,
            "broken": broken is not None,
            "seconds": round(verify_s, 2),
        },
        "exact": broken is None and checked == rows,
        "met": audited["writes_per_s"] >= 1000 and broken is None and checked == rows,
    }


def _commit() -> str:
    done = subprocess.run(
        ["git", "-C", str(Path(merchant_code.__file__).parent), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    )
    return done.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pg-data", default=str(BENCH / "var" / "pg-audit"))
    parser.add_argument("--database-url", help="a server to use instead of the embedded one")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--procs", type=int, default=2, help="client processes sharing the connections")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--label", default="", help="a name for the code under test (main, branch)")
    args = parser.parse_args()
    with ExitStack() as stack:
        url = args.database_url or stack.enter_context(embedded_postgres(Path(args.pg_data)))
        result = asyncio.run(bench(url, args))
    print(json.dumps(result, ensure_ascii=False, indent=1))
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as out:
        out.write(json.dumps(result, ensure_ascii=False) + "\n")
    print(f"appended to {RESULTS.relative_to(BENCH.parent)}", file=sys.stderr)


if __name__ == "__main__":
    main()
