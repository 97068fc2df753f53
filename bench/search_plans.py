"""The plans of the public search, for bench/city_mix.py and by hand:

    python bench/search_plans.py --database-url postgresql://... [--n 20]

prints, for the n most common and n rarest name fragments, each statement the route runs
(`merchant_code.search.find`, recorded as it runs) with EXPLAIN (ANALYZE, BUFFERS): execution ms
and shared buffers hit and read. On a database without the postings (before migration 0033) it
explains the search of that time (the GIN intersection, sorted by code).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from merchant_code import search

OLD_SEARCH = """SELECT s.code FROM shop s
WHERE ((name_bigrams(s.name) @> name_bigrams($1) AND s.name ILIKE '%' || $1 || '%')
       OR (name_bigrams(s.name_en) @> name_bigrams($1) AND s.name_en ILIKE '%' || $1 || '%'))
  AND s.status <> 'closed'
ORDER BY s.code LIMIT 20"""


class _Recorder:
    """A connection that runs every statement and remembers it with its arguments."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.statements: list[tuple[str, tuple[Any, ...]]] = []

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        self.statements.append((sql, args))
        return await self.conn.fetch(sql, *args)  # type: ignore[no-any-return]

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        self.statements.append((sql, args))
        return await self.conn.fetchrow(sql, *args)


async def _has_postings(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass('shop_name_gram') IS NOT NULL"))


async def _explain(conn: asyncpg.Connection, sql: str, args: tuple[Any, ...]) -> dict[str, Any]:
    text = "\n".join(r[0] for r in await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *args))
    raw = await conn.fetchval("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, *args)
    doc = (json.loads(raw) if isinstance(raw, str) else raw)[0]  # the app's connections decode json
    plan = doc["Plan"]
    return {
        "sql": sql,
        "plan": text,
        "shared_hit": plan.get("Shared Hit Blocks", 0),
        "shared_read": plan.get("Shared Read Blocks", 0),
        "execution_ms": doc["Execution Time"],
    }


async def explain_common(
    conn: asyncpg.Connection, fragments: list[str], *, old: bool = False
) -> list[dict[str, Any]]:
    """For each fragment, the first page's statements as the route runs them, explained: their
    plans, and totals of shared buffers hit and read and of execution time. `old`: the search
    before the postings (the GIN intersection sorted by code), on the same database: before and
    after side by side."""
    new = not old and await _has_postings(conn)
    out = []
    for fragment in fragments:
        if new:
            recorder = _Recorder(conn)
            await search.find(recorder, fragment, search.Filters(), search.Cursor(-1, ""), 20)
            statements = recorder.statements
        else:
            statements = [(OLD_SEARCH, (fragment,))]
        plans = [await _explain(conn, sql, args) for sql, args in statements]
        out.append(
            {
                "fragment": fragment,
                "statements": plans,
                "plan": "\n\n".join(p["plan"] for p in plans),
                "shared_hit": sum(p["shared_hit"] for p in plans),
                "shared_read": sum(p["shared_read"] for p in plans),
                "execution_ms": sum(p["execution_ms"] for p in plans),
            }
        )
    return out


async def _fragments(conn: asyncpg.Connection, n: int, order: str) -> list[str]:
    if await _has_postings(conn):
        # two Chinese characters (3 bytes each): what citizens type; name_en's Latin pairs
        # ('ng', 'an') are commoner still but are not the district's names
        sql = f"""SELECT gram FROM shop_name_gram WHERE length(gram) = 2 AND octet_length(gram) = 6
                  GROUP BY gram ORDER BY count(*) {order}, gram LIMIT $1"""
    else:  # before the postings: a sample of the names
        sql = f"""SELECT g FROM (SELECT unnest(name_bigrams(name)) AS g FROM shop TABLESAMPLE SYSTEM (10)) x
                  GROUP BY g ORDER BY count(*) {order}, g LIMIT $1"""
    return [r[0] for r in await conn.fetch(sql, n)]


async def common_fragments(conn: asyncpg.Connection, n: int) -> list[str]:
    """The n most common two-character fragments of shops' Chinese names."""
    return await _fragments(conn, n, "DESC")


async def rare_fragments(conn: asyncpg.Connection, n: int) -> list[str]:
    """n of the rarest two-character fragments of shops' Chinese names."""
    return await _fragments(conn, n, "ASC")


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--plans", action="store_true", help="print each plan, not only the figures")
    parser.add_argument("--old", action="store_true", help="also the search before the postings")
    args = parser.parse_args()
    conn = await asyncpg.connect(args.database_url)
    try:
        runs = [(False, "now"), (True, "before")] if args.old else [(False, "now")]
        for (kind, pick), (old, when) in itertools.product(
            (("common", common_fragments), ("rare", rare_fragments)), runs
        ):
            for row in await explain_common(conn, await pick(conn, args.n), old=old):
                print(
                    f"{when:6} {kind:6} {row['fragment']!r:12} {row['execution_ms']:8.2f} ms"
                    f"  hit {row['shared_hit']:6}  read {row['shared_read']:6}"
                )
                if args.plans:
                    print(row["plan"], end="\n\n")
    finally:
        await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
