"""Benchmark: audited writes a second, against the same writes without an audit row.

    .venv/bin/python bench/audit_writes.py                        # 32 connections, 10 s of each kind
    PYTHONPATH=/path/to/other/checkout .venv/bin/python bench/audit_writes.py --label main

One process tree: the embedded PostgreSQL in --pg-data (or --database-url), a fresh database made
for the run and migrated by the code under test (whichever merchant_code is imported: set
PYTHONPATH to measure another checkout), dropped after; --procs client processes holding
--connections pooled connections in all, under the service's role, each connection looping one
transaction after another. Time is cut into windows of --slice seconds, alternating:

- bare: a tiny write (one row into auth_attempt);
- audited: the same tiny write + `audit.append`, as every write of the service does;

--seconds of each in all, so that the load of whoever else shares the machine falls on both
alike (a transaction counts in the window it began and ended in). Where the code seals
(audit.seal), a sealer runs in the parent every SEAL_SECONDS all along, as the service's job
does, and the sealing lag is reported: the oldest unsealed row's age at each seal, and how long
the last rows took to be sealed after the writers stopped.

After the run the chain is verified: it must count every audited write. Reported: writes/s and
p50/p99 transaction latency (begin to commit) of each kind, audited / bare (overall, and per
pair of windows: min, median, max). Target (issue 17): >= 1,000 audited writes/s. One JSON line
is appended to bench/results/audit_writes.jsonl.
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
WARM_UP = 1.0  # seconds of bare writes not counted before the first window (caches warming)


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


# -- the client processes -----------------------------------------------------------------------


def window(t: float, start: float, slice_s: float) -> int:
    """Which window a moment falls in: even ones bare, odd ones audited; -1 before the first."""
    return int((t - start) // slice_s) if t >= start else -1


async def _client(url: str, role: str | None, conns: int, plan: tuple[float, float, float], tag: int) -> Any:
    start, stop, slice_s = plan
    pool = await db.create_pool(url, min_size=conns, max_size=conns, role=role)
    latencies: dict[int, list[float]] = {}

    async def loop(lane: int) -> None:
        n = 0
        async with db.acquire(pool) as conn:
            while (began := time.time()) < stop:
                k = window(began, start, slice_s)
                key = f"login:bench{tag}.{lane}.{n}"
                async with conn.transaction():
                    await conn.execute("INSERT INTO auth_attempt (key) VALUES ($1)", key)
                    if k % 2 == 1:
                        await audit.append(
                            conn, actor=None, action="bench.write", object_type="n", object_id=key
                        )
                ended = time.time()
                if k >= 0 and window(ended, start, slice_s) == k:  # done inside its own window
                    latencies.setdefault(k, []).append(ended - began)
                n += 1

    try:
        await asyncio.gather(*(loop(lane) for lane in range(conns)))
    finally:
        await pool.close()
    return latencies


def client(url: str, role: str | None, conns: int, plan: tuple[float, float, float], tag: int,
           out: Connection) -> None:  # fmt: skip
    out.send(asyncio.run(_client(url, role, conns, plan, tag)))


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


def _figures(latencies: list[float], seconds: float) -> dict[str, Any]:
    return {
        "writes": len(latencies),
        "writes_per_s": round(len(latencies) / seconds, 1),
        "p50_ms": round((percentile(latencies, 50) or 0) * 1000, 2),
        "p99_ms": round((percentile(latencies, 99) or 0) * 1000, 2),
    }


async def _run(url: str, role: str | None, args: argparse.Namespace) -> dict[str, Any]:
    """Bare and audited windows of --slice seconds, alternating, --seconds of each in all: the
    load of whoever else shares the machine falls on both alike."""
    ctx = multiprocessing.get_context("spawn")
    windows = 2 * round(args.seconds / args.slice)
    start = time.time() + 3.0 + WARM_UP  # every process connected, then warmed up, by then
    stop = start + windows * args.slice
    share = [args.connections // args.procs + (i < args.connections % args.procs) for i in range(args.procs)]
    pipes, procs = [], []
    for i, conns in enumerate(share):
        here, there = ctx.Pipe(duplex=False)
        plan = (start, stop, args.slice)
        proc = ctx.Process(target=client, args=(url, role, conns, plan, i, there))
        proc.start()
        pipes.append(here)
        procs.append(proc)
    until, lags = asyncio.Event(), []
    sealer = asyncio.create_task(_sealer(url, role, until, lags)) if hasattr(audit, "seal") else None
    by_window: dict[int, list[float]] = {}
    for here in pipes:
        for k, values in (await asyncio.to_thread(here.recv)).items():
            by_window.setdefault(k, []).extend(values)
    for proc in procs:
        proc.join()
    writers_done = time.time()
    kinds = {
        kind: [x for k, v in by_window.items() if k % 2 == odd for x in v]
        for kind, odd in (("bare", 0), ("audited", 1))
    }
    seconds = windows // 2 * args.slice
    result: dict[str, Any] = {kind: _figures(v, seconds) for kind, v in kinds.items()}
    pairs = [
        len(by_window.get(k + 1, [])) / len(by_window[k]) for k in range(0, windows, 2) if by_window.get(k)
    ]
    result["ratio_per_pair"] = {
        "min": round(min(pairs), 3), "median": round(statistics.median(pairs), 3), "max": round(max(pairs), 3)
    }  # fmt: skip
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
        run = await _run(url, role, args)
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
    bare, audited = run["bare"]["writes_per_s"], run["audited"]["writes_per_s"]
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
        "slice_s": args.slice,
        **run,
        "ratio": round(audited / bare, 3) if bare else None,
        "verify": {
            "rows": rows,
            "checked": checked,
            "broken": broken is not None,
            "seconds": round(verify_s, 2),
        },
        "exact": broken is None and checked == rows,
        "met": audited >= 1000 and broken is None and checked == rows,
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
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of each kind of write in all")
    parser.add_argument("--slice", type=float, default=1.0, help="length of one window (bare, audited, ...)")
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
