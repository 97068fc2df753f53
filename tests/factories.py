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
    owner_id_number: str = "310104198001011234",
) -> tuple[int, str]:
    area_id = await district(conn)
    code = new_shop_code(_rng.getrandbits(60))
    shop_id: int = await conn.fetchval(
        "INSERT INTO shop (code, uscc, name, trade, area_id, address, status, owner_name, owner_phone,"
        " owner_id_number) VALUES ($1, $2, $3, $4, $5, '漕溪北路1号', $6, $7, $8, $9)"
        " RETURNING id",
        code,
        uscc(),
        name,
        trade,
        area_id,
        status,
        owner_name,
        owner_phone,
        owner_id_number,
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


async def area(conn: asyncpg.Connection, code: str, name: str) -> int:
    """A subdistrict of the test district (code = district code + three digits)."""
    district_id = await district(conn)
    area_id: int = await conn.fetchval(
        "INSERT INTO area (parent_id, level, code, path, name) VALUES ($1, 'subdistrict', $2, $3, $4)"
        " RETURNING id",
        district_id,
        code,
        f"{code[:6]}.{code}",
        name,
    )
    return area_id


async def move_shop(conn: asyncpg.Connection, shop_id: int, area_id: int) -> None:
    await conn.execute("UPDATE shop SET area_id = $2 WHERE id = $1", shop_id, area_id)


async def staff(
    conn: asyncpg.Connection, shop_id: int, *, name: str, id_number: str, phone: str, cert: str
) -> None:
    await conn.execute(
        "INSERT INTO staff (shop_id, source, external_id, name, id_number, phone, role, health_cert_number,"
        " health_cert_valid_to) VALUES ($1, 'test', $2, $3, $4, $5, '厨师', $6, current_date + 200)",
        shop_id,
        f"S{next(_n)}",
        name,
        id_number,
        phone,
        cert,
    )


async def account(
    conn: asyncpg.Connection,
    login: str,
    role: str,
    *,
    password: str = "correct horse battery",  # noqa: S107 (a test account's)
    area_code: str | None = None,
    shop_ids: tuple[int, ...] = (),
    permissions: tuple[str, ...] = (),
    name: str = "测试账号",
) -> int:
    from merchant_code.auth import hash_password

    account_id: int = await conn.fetchval(
        "INSERT INTO account (login, role, area_id, display_name, password_hash, permissions)"
        " VALUES ($1, $2, (SELECT id FROM area WHERE code = $3), $4, $5, $6) RETURNING id",
        login,
        role,
        area_code,
        name,
        hash_password(password),
        list(permissions),
    )
    for shop_id in shop_ids:
        await conn.execute(
            "INSERT INTO account_shop (account_id, shop_id) VALUES ($1, $2)", account_id, shop_id
        )
    return account_id
