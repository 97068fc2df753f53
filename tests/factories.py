"""Rows for tests, written with plain SQL so a test shows exactly what it stands on."""

from __future__ import annotations

import datetime
import itertools
import random

import asyncpg

from merchant_code.codes import USCC_ALPHABET, new_shop_code, uscc_check_char

_rng = random.Random(42)
_n = itertools.count(1)


def uscc() -> str:
    body = "92310199" + "".join(_rng.choice(USCC_ALPHABET) for _ in range(9))
    return body + uscc_check_char(body)


async def district(conn: asyncpg.Connection, code: str = "310199") -> int:
    area_id: int = await conn.fetchval(
        "INSERT INTO area (level, code, path, name) VALUES ('district', $1, $1, '汇城区')"
        " ON CONFLICT (code) DO UPDATE SET name = excluded.name RETURNING id",
        code,
    )
    return area_id


async def shop(
    conn: asyncpg.Connection,
    *,
    name: str = "老王面馆",
    trade: str = "catering",
    status: str = "active",
    owner_name: str = "王伟",
    owner_phone: str = "13812341234",
) -> tuple[int, str]:
    area_id = await district(conn)
    code = new_shop_code(_rng.getrandbits(60))
    shop_id: int = await conn.fetchval(
        "INSERT INTO shop (code, uscc, name, trade, area_id, address, status, owner_name, owner_phone,"
        " owner_id_number) VALUES ($1, $2, $3, $4, $5, '漕溪北路1号', $6, $7, $8, '310104198001011234')"
        " RETURNING id",
        code,
        uscc(),
        name,
        trade,
        area_id,
        status,
        owner_name,
        owner_phone,
    )
    return shop_id, code


async def licence(
    conn: asyncpg.Connection,
    shop_id: int,
    *,
    kind: str = "food_business",
    valid_to: datetime.date | None = None,
    status: str = "active",
) -> None:
    await conn.execute(
        "INSERT INTO licence (shop_id, source, external_id, kind, number, valid_to, status)"
        " VALUES ($1, 'test', $2, $3, 'JY13101990000001', $4, $5)",
        shop_id,
        f"L{next(_n)}",
        kind,
        valid_to,
        status,
    )


async def inspection(
    conn: asyncpg.Connection,
    shop_id: int,
    *,
    on: datetime.date,
    result: str = "pass",
    grade: str | None = "A",
) -> None:
    await conn.execute(
        "INSERT INTO inspection (shop_id, source, external_id, inspected_on, result, grade)"
        " VALUES ($1, 'test', $2, $3, $4, $5)",
        shop_id,
        f"I{next(_n)}",
        on,
        result,
        grade,
    )


async def review(conn: asyncpg.Connection, shop_id: int, rating: int) -> None:
    await conn.execute(
        "INSERT INTO review (shop_id, source, external_id, rating, posted_at)"
        " VALUES ($1, 'test', $2, $3, now())",
        shop_id,
        f"R{next(_n)}",
        rating,
    )
