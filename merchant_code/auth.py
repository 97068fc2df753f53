"""Who is asking: passwords (argon2id), sessions, signed bearer tokens, throttling.

A token is an HS256 JWT naming a session row; the row can be revoked (logout, password change,
disabled account), so a token stops working before it expires when it should.
"""

from __future__ import annotations

import base64
import datetime
import secrets
from typing import Literal

import argon2
import asyncpg
import jwt
import msgspec

from merchant_code import db
from merchant_code.errors import DomainError, Unauthorized

Role = Literal["merchant", "inspector", "manager", "admin"]
ISSUER = "merchant-code"
BAD_LOGIN = "login or password is wrong, or the account is disabled"

# argon2-cffi's defaults are argon2id, t=3, m=64 MiB, p=4: above OWASP's minimum (t=2, m=19 MiB)
_hasher = argon2.PasswordHasher()
# verified against when the login is unknown, so that case costs the same time as a wrong password
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class TooManyAttempts(DomainError):
    status = 429
    slug = "too-many-attempts"
    title = "Too many attempts"


class Principal(msgspec.Struct, frozen=True):
    account_id: int
    login: str
    role: Role
    session_id: str
    area_id: int | None = None
    area_path: str | None = None
    shop_ids: tuple[int, ...] = ()
    permissions: frozenset[str] = frozenset()

    def covers(self, area_path: str) -> bool:
        """An inspector's or manager's scope covers their area and everything below it."""
        if self.role == "admin":
            return True
        if self.role not in ("inspector", "manager") or self.area_path is None:
            return False
        return area_path == self.area_path or area_path.startswith(self.area_path + ".")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored or _DUMMY_HASH, password) and stored is not None
    except argon2.exceptions.VerificationError:
        return False
    except argon2.exceptions.InvalidHashError:
        return False


def check_new_password(password: str) -> None:
    from merchant_code.errors import InvalidInput

    if len(password) < 10:
        raise InvalidInput("new_password", "a password needs at least 10 characters")
    if len(password) > 200:
        raise InvalidInput("new_password", "a password can have at most 200 characters")


def issue_token(key: bytes, session_id: str, account_id: int, expires: datetime.datetime) -> str:
    claims = {"iss": ISSUER, "sub": str(account_id), "sid": session_id, "exp": expires}
    return jwt.encode(claims, key, algorithm="HS256")


def read_token(key: bytes, token: str) -> tuple[str, int]:
    """(session id, account id) of a valid token; Unauthorized for anything else."""
    try:
        claims = jwt.decode(
            token, key, algorithms=["HS256"], issuer=ISSUER, options={"require": ["exp", "sid", "sub"]}
        )
        return str(claims["sid"]), int(claims["sub"])
    except (jwt.InvalidTokenError, ValueError, TypeError):
        raise Unauthorized("the session token is not valid or has expired; log in again") from None


async def throttle(conn: asyncpg.Connection, keys: list[str], limit: int, minutes: int) -> None:
    failures = await db.queries.count_recent_auth_failures(conn, keys=keys, minutes=minutes)
    if failures >= limit:
        raise TooManyAttempts(f"too many failed attempts; try again in {minutes} minutes")


async def record_failure(conn: asyncpg.Connection, keys: list[str]) -> None:
    await db.queries.create_auth_failures(conn, keys=keys)


async def open_session(
    conn: asyncpg.Connection, key: bytes, account_id: int, minutes: int, client: str | None
) -> tuple[str, datetime.datetime]:
    session_id = base64.b32encode(secrets.token_bytes(20)).decode().rstrip("=")
    expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=minutes)
    await db.queries.create_session(conn, id=session_id, account_id=account_id, expires_at=expires, client=client)
    return issue_token(key, session_id, account_id, expires), expires


async def principal_for(conn: asyncpg.Connection, key: bytes, token: str) -> Principal:
    session_id, account_id = read_token(key, token)
    row = await db.queries.get_principal_by_session(conn, id=session_id, account_id=account_id)
    principal = db.one(row, Principal)
    if principal is None:
        raise Unauthorized("the session has ended; log in again")
    return principal
