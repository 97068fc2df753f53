"""Who is asking: passwords (argon2id), sessions, signed bearer tokens, throttling.

A token is an HS256 JWT naming a session row; the row can be revoked (logout, password change,
disabled account), so a token stops working before it expires when it should.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import datetime
import hashlib
import os
import secrets
import threading
import unicodedata
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import argon2
import asyncpg
import jwt
import msgspec

from merchant_code import audit, db
from merchant_code.codes import CROCKFORD
from merchant_code.errors import Busy, DomainError, InvalidInput, Unauthorized
from merchant_code.settings import Settings

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


# per client address, more failures are allowed than per account: many people share an address
ADDRESS_FACTOR = 4


def attempt_keys(kind: str, subject: str, client: str | None) -> list[tuple[str, int]]:
    """The throttle keys of one attempt and how many of `limit` each may use (1 or ADDRESS_FACTOR)."""
    keys = [(f"{kind}:{subject.lower()}", 1)]
    if client:
        keys.append((f"ip:{client}", ADDRESS_FACTOR))
    return keys


async def begin_attempt(
    conn: asyncpg.Connection, keys: list[tuple[str, int]], limit: int, minutes: int
) -> list[int]:
    """Record an attempt before checking it, then count the attempts recorded before it: so
    guesses sent in parallel count against each other. `conn` must not be in a transaction (the
    record has to be visible to the others at once, and survive the request failing). Returns
    the attempt's ids: `attempt_succeeded` removes them, a failure leaves them counted."""
    ids: list[int] = await db.queries.create_auth_attempts(conn, keys=[key for key, _ in keys])
    for (key, factor), attempt_id in zip(keys, ids, strict=True):
        before = await db.queries.count_auth_attempts_before(conn, key=key, minutes=minutes, id=attempt_id)
        if before > limit * factor:
            await db.queries.delete_auth_attempts(conn, ids=ids)  # a refused attempt does not extend the wait
            raise TooManyAttempts(
                f"too many failed attempts; try again in {minutes} minutes",
                retry_after=minutes * 60,
            )
    return ids


async def attempt_succeeded(conn: asyncpg.Connection, ids: list[int], forget: str | None = None) -> None:
    """Un-count a successful attempt; `forget` also clears the earlier failures of that key."""
    await db.queries.delete_auth_attempts(conn, ids=ids)
    if forget is not None:
        await db.queries.delete_auth_failures(conn, keys=[forget])


T = TypeVar("T")


class _Hashing:
    """argon2 is slow on purpose, and a burst of logins for made-up accounts (each from another
    address, so no throttle applies) costs a hash each: all of it runs on one thread per worker
    process whose priority is lowered (nice 19; argon2's lanes inherit it), so the scans and the
    rest of the service keep the cores they need, and at most MAX_WAITING hashes wait their turn:
    past that, 503 at once."""

    MAX_WAITING = 32

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.waiting = 0

    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        if self.pool is None:
            self.pool = concurrent.futures.ThreadPoolExecutor(1, "argon2", initializer=_lower_priority)
        return self.pool

    async def run(self, work: Callable[[], T]) -> T:
        if self.waiting >= self.MAX_WAITING:
            raise Busy("too many logins at once; try again in a moment", retry_after=1)
        self.waiting += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool(), work)
        finally:
            self.waiting -= 1


def _lower_priority() -> None:
    with contextlib.suppress(OSError, AttributeError):  # not Linux, or not allowed: run as is
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


_hashing = _Hashing()


async def hash_password_off_loop(password: str) -> str:
    return await _hashing.run(lambda: hash_password(password))


async def verify_password_off_loop(stored: str | None, password: str) -> bool:
    return await _hashing.run(lambda: verify_password(stored, password))


async def open_session(
    conn: asyncpg.Connection, key: bytes, account_id: int, minutes: int, client: str | None
) -> tuple[str, datetime.datetime]:
    session_id = base64.b32encode(secrets.token_bytes(20)).decode().rstrip("=")
    expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=minutes)
    await db.queries.create_session(
        conn, id=session_id, account_id=account_id, expires_at=expires, client=client
    )
    return issue_token(key, session_id, account_id, expires), expires


async def principal_for(conn: asyncpg.Connection, key: bytes, token: str) -> Principal:
    session_id, account_id = read_token(key, token)
    row = await db.queries.get_principal_by_session(conn, id=session_id, account_id=account_id)
    principal = db.one(row, Principal)
    if principal is None:
        raise Unauthorized("the session has ended; log in again")
    return principal


class Session(msgspec.Struct, frozen=True):
    token: str
    expires_at: datetime.datetime
    login: str
    role: Role


async def throttle(
    side_pool: asyncpg.Pool, keys: list[tuple[str, int]], limit: int, minutes: int, timeout: float
) -> list[int]:
    """`begin_attempt` on a connection of the side pool, given back at once: the request's own
    connection is in a transaction (the record must be visible and survive its failure), and a
    second one from the request pool could wait forever behind requests that wait the same way."""
    async with db.acquire(side_pool, timeout) as side:
        return await begin_attempt(side, keys, limit, minutes)


async def log_in(
    pools: tuple[asyncpg.Pool, asyncpg.Pool],
    *,
    key: bytes,
    settings: Settings,
    login: str,
    password: str,
    client: str | None,
    request_id: str | None,
) -> Session:
    """Check a login and open a session. The attempt is recorded on the side pool, outside any
    request transaction, so that refusing the login does not roll the record back; no connection
    is held while the password hash is checked (argon2 is slow on purpose)."""
    pool, side_pool = pools
    keys = attempt_keys("login", login, client)
    async with db.acquire(side_pool, settings.acquire_seconds) as side:
        ids = await begin_attempt(side, keys, settings.throttle_failures, settings.throttle_minutes)
        row = await db.queries.get_account_for_login(side, login=login.lower())
    ok = await verify_password_off_loop(row["password_hash"] if row else None, password)
    if not ok or row is None or row["disabled"]:
        raise Unauthorized(BAD_LOGIN)  # the attempt stays recorded as a failure
    async with db.acquire(pool, settings.acquire_seconds) as conn, conn.transaction():
        await attempt_succeeded(conn, ids, forget=keys[0][0])
        token, expires = await open_session(conn, key, row["id"], settings.token_minutes, client)
        await audit.append(
            conn,
            actor=row["id"],
            action="login",
            object_type="account",
            object_id=login.lower(),
            request_id=request_id,
        )
    return Session(token=token, expires_at=expires, login=login.lower(), role=row["role"])


def new_claim_code() -> str:
    """Sixteen Crockford base32 symbols (80 random bits), printed in groups of four."""
    raw = "".join(secrets.choice(CROCKFORD) for _ in range(16))
    return "-".join(raw[i : i + 4] for i in range(0, 16, 4))


def claim_code_hash(claim_code: str) -> str:
    """Claim codes carry 80 random bits, so a plain SHA-256 is enough (a password needs argon2)."""
    folded = unicodedata.normalize("NFKC", claim_code).upper().replace("-", "").replace(" ", "")
    folded = folded.translate(str.maketrans("ILO", "110"))
    return hashlib.sha256(b"merchant-code claim " + folded.encode()).hexdigest()


async def housekeeping(state: Any) -> None:
    """Scheduled: forget failed attempts older than the throttle window, and ended sessions."""
    async with db.acquire(state.pool) as conn:
        await db.queries.delete_old_auth_failures(conn, minutes=state.settings.throttle_minutes)
        await db.queries.delete_ended_sessions(conn, days=7)
