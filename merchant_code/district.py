"""A synthetic district for the demo and the benchmarks, loaded with COPY.

`seed_district(conn, shops=N, seed=S, today=D)` writes the same rows for the same arguments into
an empty database (ids included). Shops are made and copied in chunks so memory stays flat at
a million shops; children are joined to their parents' ids by reading the ids just assigned.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import time
from collections.abc import Callable
from typing import Any

import argon2
import asyncpg
import msgspec

from merchant_code import district_rows as rows
from merchant_code.district_words import SENTIMENT, SUBDISTRICTS
from merchant_code.errors import Conflict

DISTRICT_CODE = "310199"
CHUNK = 20_000
SHOPS_PER_GRID = 500


class SeedSummary(msgspec.Struct, frozen=True):
    district_code: str
    areas: int
    shops: int
    licences: int
    inspections: int
    violations: int
    reviews: int
    sentiment_items: int
    honours: int
    staff: int
    accounts: int
    seconds: float


class DemoLogin(msgspec.Struct, frozen=True):
    login: str
    password: str
    role: str
    detail: str


def demo_logins(seed: int) -> list[DemoLogin]:
    """The demo accounts; passwords derive from the seed so `demo` can print them every time."""

    def password(role: str) -> str:
        digest = hashlib.sha256(f"merchant-code demo {seed} {role}".encode()).digest()
        return base64.b32encode(digest).decode()[:12].lower()

    return [
        DemoLogin("merchant", password("merchant"), "merchant", "owns the first catering shop"),
        DemoLogin("inspector", password("inspector"), "inspector", f"subdistrict {DISTRICT_CODE}001"),
        DemoLogin("manager", password("manager"), "manager", f"district {DISTRICT_CODE}"),
    ]


async def seed_district(
    conn: asyncpg.Connection,
    *,
    shops: int,
    seed: int,
    today: datetime.date,
    progress: Callable[[str], None] | None = None,
) -> SeedSummary:
    started = time.perf_counter()
    if await conn.fetchval("SELECT 1 FROM area WHERE code = $1", DISTRICT_CODE):
        raise Conflict(f"district {DISTRICT_CODE} is already seeded in this database")
    counts: dict[str, int] = dict.fromkeys(
        ("licences", "inspections", "violations", "reviews", "honours", "staff"), 0
    )
    g = rows.Gen(seed, today)
    async with conn.transaction():
        await conn.execute("SET LOCAL synchronous_commit = off")
        district_id, grids = await _areas(conn, shops)
        for start in range(0, shops, CHUNK):
            size = min(CHUNK, shops - start)
            await _chunk(conn, g, grids, size, counts)
            if progress:
                progress(f"{start + size:>9,} / {shops:,} shops")
        counts["sentiment_items"] = await _sentiment(conn, g, shops)
        counts["accounts"] = await _accounts(conn, seed, district_id)
    return SeedSummary(
        district_code=DISTRICT_CODE,
        areas=len(grids) + 1 + min(len(SUBDISTRICTS), len(grids)),
        shops=shops,
        seconds=time.perf_counter() - started,
        **counts,
    )


async def _areas(conn: asyncpg.Connection, shops: int) -> tuple[int, list[int]]:
    district_id: int = await conn.fetchval(
        "INSERT INTO area (level, code, path, name, name_en) VALUES ('district', $1, $1, '汇城区',"
        " 'Huicheng District') RETURNING id",
        DISTRICT_CODE,
    )
    per_sub = max(2, -(-shops // SHOPS_PER_GRID) // len(SUBDISTRICTS) + 1)
    grids: list[int] = []
    for i, (name, name_en) in enumerate(SUBDISTRICTS, start=1):
        code = f"{DISTRICT_CODE}{i:03d}"
        sub_id: int = await conn.fetchval(
            "INSERT INTO area (parent_id, level, code, path, name, name_en)"
            " VALUES ($1, 'subdistrict', $2, $3, $4, $5) RETURNING id",
            district_id,
            code,
            f"{DISTRICT_CODE}.{code}",
            name,
            name_en + " Subdistrict",
        )
        grid_codes = [f"{code}{j:03d}" for j in range(1, per_sub + 1)]
        created = await conn.fetch(
            "INSERT INTO area (parent_id, level, code, path, name, name_en)"
            " SELECT $1, 'grid', c, $2 || '.' || c, $3 || '第' || right(c, 3) || '网格',"
            " 'Grid ' || right(c, 3)"
            " FROM unnest($4::text[]) AS c ORDER BY c RETURNING id",
            sub_id,
            f"{DISTRICT_CODE}.{code}",
            name,
            grid_codes,
        )
        grids.extend(sorted(r["id"] for r in created))
    return district_id, grids


async def _chunk(
    conn: asyncpg.Connection, g: rows.Gen, grids: list[int], size: int, counts: dict[str, int]
) -> None:
    shop_rows = [rows.shop_row(g, rows.pick(g.rng, grids), DISTRICT_CODE) for _ in range(size)]
    await conn.copy_records_to_table("shop", records=shop_rows, columns=rows.SHOP_COLUMNS)
    ids = await _ids(conn, "shop", "code", [r[0] for r in shop_rows])
    licences: list[rows.Row] = []
    inspections: list[tuple[rows.Row, list[tuple[str, str, bool, bool]]]] = []
    reviews: list[rows.Row] = []
    staff: list[rows.Row] = []
    honours: list[rows.Row] = []
    for shop in shop_rows:
        shop_id, trade = ids[shop[0]], shop[4]
        licences += rows.licence_rows(g, shop_id, trade, shop[1])
        inspections += rows.inspection_rows(g, shop_id, trade)
        reviews += rows.review_rows(g, shop_id, trade)
        staff += rows.staff_rows(g, shop_id, trade)
        honours += rows.honour_rows(g, shop_id)
    await _copy(conn, "licence", licences, rows.LICENCE_COLUMNS, counts, "licences")
    await _copy(
        conn, "inspection", [i[0] for i in inspections], rows.INSPECTION_COLUMNS, counts, "inspections"
    )
    inspection_ids = await _ids(conn, "inspection", "external_id", [i[0][2] for i in inspections])
    violations = [(inspection_ids[row[2]], *v) for row, found in inspections for v in found]
    await _copy(conn, "violation", violations, rows.VIOLATION_COLUMNS, counts, "violations")
    await _copy(conn, "review", reviews, rows.REVIEW_COLUMNS, counts, "reviews")
    await _copy(conn, "staff", staff, rows.STAFF_COLUMNS, counts, "staff")
    await _copy(conn, "honour", honours, rows.HONOUR_COLUMNS, counts, "honours")


async def _copy(
    conn: asyncpg.Connection,
    table: str,
    records: list[Any],
    columns: list[str],
    counts: dict[str, int],
    key: str,
) -> None:
    if records:
        await conn.copy_records_to_table(table, records=records, columns=columns)
    counts[key] += len(records)


async def _ids(conn: asyncpg.Connection, table: str, key: str, values: list[str]) -> dict[str, int]:
    """The ids just assigned to the copied rows, by their natural key."""
    found = await conn.fetch(f"SELECT {key}, id FROM {table} WHERE {key} = ANY($1::text[])", values)
    return {r[key]: r["id"] for r in found}


async def _sentiment(conn: asyncpg.Connection, g: rows.Gen, shops: int) -> int:
    picked = await conn.fetch(
        "SELECT id, name FROM shop WHERE id = ANY($1::bigint[]) ORDER BY id",
        sorted({g.rng.randrange(1, shops + 1) for _ in range(max(3, shops // 250))}),
    )
    items = []
    for shop in picked:
        title, tone = g.rng.choice(SENTIMENT)
        external = g.next_id("N")
        items.append(
            (
                shop["id"],
                "seed",
                external,
                title.format(name=shop["name"]),
                f"https://news.example.org/{external}",
                g.now - datetime.timedelta(hours=g.rng.randrange(24 * 90)),
                tone,
                round(g.rng.uniform(0.6, 1.0), 2),
                g.now,
            )
        )
    columns = [
        "shop_id",
        "source",
        "external_id",
        "title",
        "url",
        "published_at",
        "tone",
        "match_confidence",
        "fetched_at",
    ]
    if items:
        await conn.copy_records_to_table("sentiment_item", records=items, columns=columns)
    return len(items)


async def _accounts(conn: asyncpg.Connection, seed: int, district_id: int) -> int:
    hasher = argon2.PasswordHasher()
    logins = {login.role: login for login in demo_logins(seed)}
    subdistrict: int = await conn.fetchval("SELECT id FROM area WHERE code = $1", f"{DISTRICT_CODE}001")
    shop_id = await conn.fetchval(
        "SELECT id FROM shop WHERE trade = 'catering' AND status = 'active' ORDER BY id LIMIT 1"
    )
    for role, area_id, name in (
        ("merchant", None, "王店主"),
        ("inspector", subdistrict, "李检查员"),
        ("manager", district_id, "张科长"),
    ):
        account_id = await conn.fetchval(
            "INSERT INTO account (login, role, area_id, display_name, password_hash)"
            " VALUES ($1, $2, $3, $4, $5) RETURNING id",
            logins[role].login,
            role,
            area_id,
            name,
            hasher.hash(logins[role].password),
        )
        if role == "merchant" and shop_id is not None:
            await conn.execute(
                "INSERT INTO account_shop (account_id, shop_id) VALUES ($1, $2)", account_id, shop_id
            )
    return len(logins)
