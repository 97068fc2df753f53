"""Benchmark: `seed_district` at scale against a bare COPY baseline, in one process tree.

    .venv/bin/python bench/seed_scale.py --shops 1000000 [--database-url URL]

Without a URL it starts the embedded PostgreSQL in a temporary folder. The baseline COPYs the
same number of shop-shaped rows into a bare table (no keys, no indexes); the ratio says what the
generator, the constraints and the indexes cost on top of the database's raw load rate.
Results are appended to bench/results/seed_scale.jsonl.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import platform
import tempfile
import time
from pathlib import Path

import asyncpg

from merchant_code import db, migrate
from merchant_code.district import seed_district
from merchant_code.embedded import embedded_postgres

RESULTS = Path(__file__).resolve().parent / "results" / "seed_scale.jsonl"


async def baseline(conn: asyncpg.Connection, rows: int) -> float:
    await conn.execute(
        "CREATE TEMP TABLE bare_shop (code text, uscc text, name text, trade text, area_id bigint,"
        " address text, lat float8, lon float8, owner_name text, owner_phone text)"
    )
    record = (
        "0123456789ABC",
        "91310000MA1FL4B24G",
        "老王面馆",
        "catering",
        1,
        "漕溪北路123号",
        31.18,
        121.43,
        "王伟",
        "13800001234",
    )
    started = time.perf_counter()
    chunk = [record] * 50_000
    for _ in range(0, rows, len(chunk)):
        await conn.copy_records_to_table("bare_shop", records=chunk)
    return time.perf_counter() - started


async def run(url: str, shops: int, seed: int) -> dict[str, object]:
    conn = await db.connect(url)
    try:
        await migrate.migrate(conn)
        base_s = await baseline(conn, shops)
        summary = await seed_district(
            conn,
            shops=shops,
            seed=seed,
            today=datetime.date(2026, 11, 23),
            progress=lambda m: print("  ", m, flush=True),
        )
        size = await conn.fetchval("SELECT pg_database_size(current_database())")
    finally:
        await conn.close()
    total_rows = sum(
        getattr(summary, f)
        for f in (
            "shops",
            "licences",
            "inspections",
            "violations",
            "reviews",
            "sentiment_items",
            "honours",
            "staff",
        )
    )
    return {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.python_version()}",
        "shops": shops,
        "seed": seed,
        "seed_seconds": round(summary.seconds, 1),
        "rows": total_rows,
        "rows_per_second": round(total_rows / summary.seconds),
        "baseline_copy_seconds_same_shop_count": round(base_s, 2),
        "baseline_rows_per_second": round(shops / base_s),
        # per row: generation, constraints, indexes and child-id lookups against a bare COPY
        "ratio_bare_copy_rate_to_seed_rate": round((shops / base_s) / (total_rows / summary.seconds), 1),
        "database_bytes": size,
        "database_gib": round(size / 2**30, 2),
        "profile_seconds": round(summary.profile_seconds, 1),
        "profiles_per_second": round(summary.profiles / summary.profile_seconds) if summary.profiles else 0,
        "counts": {f: getattr(summary, f) for f in summary.__struct_fields__ if not f.endswith("seconds")},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shops", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    if args.database_url:
        result = asyncio.run(run(args.database_url, args.shops, args.seed))
    else:
        with (
            tempfile.TemporaryDirectory(prefix="mc-bench-") as tmp,
            embedded_postgres(Path(tmp) / "pg") as url,
        ):
            result = asyncio.run(run(url, args.shops, args.seed))
    print(json.dumps(result, ensure_ascii=False, indent=2))
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as out:
        out.write(json.dumps(result, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
