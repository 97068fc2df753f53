"""Account administration from the command line: create, disable, reset a password; issue a
shop's claim code. Every change is audited with no actor (the operator at the console)."""

from __future__ import annotations

import secrets

import asyncpg
import msgspec

from merchant_code import audit, auth, db
from merchant_code.codes import parse_shop_code
from merchant_code.errors import Conflict, InvalidInput, NotFound

PERMISSIONS = frozenset({"pii:read"})


class NewAccount(msgspec.Struct, frozen=True):
    login: str
    role: str
    password: str
    area_code: str | None
    shops: list[str]


def new_password() -> str:
    return secrets.token_urlsafe(12)


async def create(
    conn: asyncpg.Connection,
    *,
    login: str,
    role: str,
    area: str | None,
    shops: list[str],
    name: str | None,
    permissions: list[str],
    password: str | None,
) -> NewAccount:
    login = login.strip().lower()
    if role not in ("merchant", "inspector", "manager", "admin"):
        raise InvalidInput("role", "role must be merchant, inspector, manager or admin")
    if role in ("inspector", "manager") and not area:
        raise InvalidInput("area", f"an {role} works in an area: pass --area with its code")
    if role not in ("inspector", "manager") and area:
        raise InvalidInput("area", f"a {role} account is not bound to an area")
    if shops and role != "merchant":
        raise InvalidInput("shop", "only a merchant account owns shops")
    unknown = sorted(set(permissions) - PERMISSIONS)
    if unknown:
        raise InvalidInput("permission", f"unknown permission {unknown[0]!r} (known: pii:read)")
    if password is not None:
        auth.check_new_password(password)
    password = password or new_password()
    async with conn.transaction():
        if await db.queries.get_account_by_login(conn, login=login) is not None:
            raise Conflict(f"an account with login {login!r} exists already")
        area_id = None
        if area:
            found = await db.queries.get_area_by_code(conn, code=area)
            if found is None:
                raise NotFound(f"no area has code {area!r}")
            area_id = found["id"]
        try:
            account_id = await db.queries.create_account(
                conn,
                login=login,
                role=role,
                area_id=area_id,
                display_name=name or login,
                phone=None,
                password_hash=auth.hash_password(password),
                permissions=sorted(set(permissions)),
            )
        except asyncpg.CheckViolationError:
            raise InvalidInput(
                "login",
                "a login is 3-64 lower-case letters, digits, '.', '_' or '-',"
                " starting with a letter or digit",
            ) from None
        codes = []
        for raw in shops:
            code = parse_shop_code(raw)
            shop = await db.queries.get_shop_for_claim(conn, code=code)
            if shop is None:
                raise NotFound(f"no shop has code {code}")
            await db.queries.link_account_shop(conn, account_id=account_id, shop_id=shop["id"])
            codes.append(code)
        await audit.append(
            conn,
            actor=None,
            action="account.create",
            object_type="account",
            object_id=login,
            detail={"role": role, "area": area, "shops": codes, "permissions": sorted(set(permissions))},
        )
    return NewAccount(login=login, role=role, password=password, area_code=area, shops=codes)


async def _account_id(conn: asyncpg.Connection, login: str) -> int:
    row = await db.queries.get_account_by_login(conn, login=login.strip().lower())
    if row is None:
        raise NotFound(f"no account has login {login!r}")
    account_id: int = row["id"]
    return account_id


async def disable(conn: asyncpg.Connection, login: str) -> None:
    """Disable the account and end its sessions at once."""
    async with conn.transaction():
        account_id = await _account_id(conn, login)
        await db.queries.disable_account(conn, account_id=account_id)
        await db.queries.revoke_sessions_of_account(conn, account_id=account_id, keep=None)
        await audit.append(conn, actor=None, action="account.disable", object_type="account", object_id=login)


async def reset_password(conn: asyncpg.Connection, login: str, password: str | None) -> str:
    """Set a new password (given, or generated and returned) and end every session."""
    if password is not None:
        auth.check_new_password(password)
    password = password or new_password()
    async with conn.transaction():
        account_id = await _account_id(conn, login)
        await db.queries.update_password(
            conn, account_id=account_id, password_hash=auth.hash_password(password)
        )
        await db.queries.revoke_sessions_of_account(conn, account_id=account_id, keep=None)
        await audit.append(
            conn, actor=None, action="account.reset-password", object_type="account", object_id=login
        )
    return password


async def issue_claim_code(conn: asyncpg.Connection, raw_code: str) -> str:
    """A new one-time claim code for the shop's QR letter; any earlier one stops working."""
    code = parse_shop_code(raw_code)
    claim_code = auth.new_claim_code()
    async with conn.transaction():
        if (
            await db.queries.set_claim_code(conn, code=code, claim_code_hash=auth.claim_code_hash(claim_code))
            is None
        ):
            raise NotFound(f"no shop has code {code}")
        await audit.append(conn, actor=None, action="shop.claim-code", object_type="shop", object_id=code)
    return claim_code
