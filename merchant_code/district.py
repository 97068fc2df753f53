"""A synthetic district for the demo and the benchmarks, loaded with COPY.

`seed_district(conn, shops=N, seed=S, today=D)` writes the same rows for the same arguments into
an empty database (ids included). Shops are made and copied in chunks so memory stays flat at
a million shops; children are joined to their parents' ids by reading the ids just assigned.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import multiprocessing
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import argon2
import asyncpg
import msgspec

from merchant_code import district_rows as rows
from merchant_code import profiles
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
    profiles: int
    seconds: float  # generating and loading the rows
    profile_seconds: float  # building the profiles afterwards


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
        DemoLogin("inspector", password("inspector"), "inspector", "the subdistrict of the merchant's shop"),
        DemoLogin("manager", password("manager"), "manager", f"district {DISTRICT_CODE}"),
        DemoLogin("admin", password("admin"), "admin", "every area; accounts and the audit trail"),
    ]


async def seed_district(
    conn: asyncpg.Connection,
    *,
    shops: int,
    seed: int,
    today: datetime.date,
    progress: Callable[[str], None] | None = None,
    base: str | None = None,
) -> SeedSummary:
    started = time.perf_counter()
    if await conn.fetchval("SELECT 1 FROM area WHERE code = $1", DISTRICT_CODE):
        raise Conflict(f"district {DISTRICT_CODE} is already seeded in this database")
    counts = dict.fromkeys(("shop", "licence", "inspection", "violation", "review", "staff", "honour"), 0)
    async with conn.transaction():
        await conn.execute("SET LOCAL synchronous_commit = off")
        district_id, grids = await _areas(conn, shops)
        for chunk in _chunks(seed, today, shops, grids):
            await _copy_chunk(conn, chunk, counts)
            if progress:
                progress(f"{counts['shop']:>9,} / {shops:,} shops")
        sentiment = await _sentiment(conn, rows.Gen(seed, today, chunk=-1), shops)
        accounts = await _accounts(conn, seed, district_id)
    generated = time.perf_counter() - started
    if progress:
        progress("building every shop's profile")
    built, profile_seconds = await profiles.rebuild_all(conn, today=today, progress=progress, base=base)
    return SeedSummary(
        district_code=DISTRICT_CODE,
        areas=len(grids) + 1 + len(SUBDISTRICTS),
        shops=counts["shop"],
        licences=counts["licence"],
        inspections=counts["inspection"],
        violations=counts["violation"],
        reviews=counts["review"],
        sentiment_items=sentiment,
        honours=counts["honour"],
        staff=counts["staff"],
        accounts=accounts,
        profiles=built,
        seconds=generated,
        profile_seconds=profile_seconds,
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


def _chunks(
    seed: int, today: datetime.date, shops: int, grids: list[int]
) -> Iterator[dict[str, list[rows.Row]]]:
    """Chunks in order; past a few chunks they are made in a second process while this one
    copies, so the generator and PostgreSQL each keep a core busy."""
    jobs = [
        (seed, today, n, start, min(CHUNK, shops - start), grids, DISTRICT_CODE)
        for n, start in enumerate(range(0, shops, CHUNK))
    ]
    if len(jobs) <= 2:
        yield from (rows.make_chunk(*job) for job in jobs)
        return
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        ahead = [pool.submit(rows.make_chunk, *job) for job in jobs[:2]]
        for job in jobs[2:]:
            done = ahead.pop(0).result()
            ahead.append(pool.submit(rows.make_chunk, *job))
            yield done
        for future in ahead:
            yield future.result()


async def _copy_chunk(
    conn: asyncpg.Connection, chunk: dict[str, list[rows.Row]], counts: dict[str, int]
) -> None:
    shops = chunk["shop"]
    before = await conn.fetchval("SELECT coalesce(max(id), 0) FROM shop")
    await _copy(conn, "shop", shops, rows.SHOP_COLUMNS, counts)
    by_code = await _ids(conn, "shop", "code", before)
    shop_ids = [by_code[s[0]] for s in shops]
    before = await conn.fetchval("SELECT coalesce(max(id), 0) FROM inspection")
    for table, columns in (
        ("licence", rows.LICENCE_COLUMNS),
        ("review", rows.REVIEW_COLUMNS),
        ("staff", rows.STAFF_COLUMNS),
        ("honour", rows.HONOUR_COLUMNS),
        ("inspection", rows.INSPECTION_COLUMNS),
    ):
        await _copy(conn, table, [(shop_ids[r[0]], *r[1:]) for r in chunk[table]], columns, counts)
    by_external = await _ids(conn, "inspection", "external_id", before)
    inspection_ids = [by_external[r[2]] for r in chunk["inspection"]]
    violations = [(inspection_ids[v[0]], *v[1:]) for v in chunk["violation"]]
    await _copy(conn, "violation", violations, rows.VIOLATION_COLUMNS, counts)


async def _copy(
    conn: asyncpg.Connection, table: str, records: list[Any], columns: list[str], counts: dict[str, int]
) -> None:
    if records:
        await conn.copy_records_to_table(table, records=records, columns=columns)
    counts[table] += len(records)


async def _ids(conn: asyncpg.Connection, table: str, key: str, after: int) -> dict[str, int]:
    """The ids just assigned to the copied rows, by their natural key (a primary-key range scan)."""
    found = await conn.fetch(f"SELECT {key}, id FROM {table} WHERE id > $1", after)
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
    """The demo's people: a merchant owning the first active catering shop, an inspector for the
    subdistrict that shop is in (so the demo's inspector can inspect the demo merchant's shop), a
    manager for the district and an admin."""
    hasher = argon2.PasswordHasher()
    logins = {login.role: login for login in demo_logins(seed)}
    shop = await conn.fetchrow(
        "SELECT s.id, g.parent_id AS subdistrict FROM shop s JOIN area g ON g.id = s.area_id"
        " WHERE s.trade = 'catering' AND s.status = 'active' ORDER BY s.id LIMIT 1"
    )
    subdistrict: int = (
        shop["subdistrict"]
        if shop is not None
        else await conn.fetchval("SELECT id FROM area WHERE code = $1", f"{DISTRICT_CODE}001")
    )
    for role, area_id, name in (
        ("merchant", None, "王店主"),
        ("inspector", subdistrict, "李检查员"),
        ("manager", district_id, "张科长"),
        ("admin", None, "系统管理员"),
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
        if role == "merchant" and shop is not None:
            await conn.execute(
                "INSERT INTO account_shop (account_id, shop_id) VALUES ($1, $2)", account_id, shop["id"]
            )
    return len(logins)
