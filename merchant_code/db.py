"""Connections: the pool, the one-transaction-per-request dependency, and named queries."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, cast

import aiosql
import asyncpg
import msgspec
from litestar.datastructures import State

from merchant_code import db_health
from merchant_code.errors import Busy, StartupError, Unreachable

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"

# every named query of sql/queries/*.sql, as `queries.<name>(conn, ...)` (names are unique)
queries: Any = aiosql.from_path(SQL_DIR / "queries", "asyncpg")

T = TypeVar("T")


async def fetch_all(rows: AsyncIterator[asyncpg.Record], into: type[T]) -> list[T]:
    """A list query's rows as structs (aiosql yields asyncpg records one by one)."""
    return msgspec.convert([dict(r) async for r in rows], list[into])  # type: ignore[valid-type]


def one(row: asyncpg.Record | None, into: type[T]) -> T | None:
    return None if row is None else msgspec.convert(dict(row), into)


async def _init_connection(conn: asyncpg.Connection) -> None:
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(
            kind, schema="pg_catalog", encoder=_encode_json, decoder=msgspec.json.decode
        )


def _encode_json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


async def connect(url: str, *, timeout: float = 10.0) -> asyncpg.Connection:
    """One connection, with errors turned into one line a person can act on."""
    try:
        conn: asyncpg.Connection = await asyncpg.connect(url, timeout=timeout)
    except Exception as exc:
        raise StartupError(describe_connect_error(url, exc)) from None
    await _init_connection(conn)
    return conn


APP_ROLE = "merchant_code_app"


class PooledConnection(asyncpg.Connection):
    """No reset query when a connection goes back to the pool: the service keeps no session
    state (transactions, advisory locks and SET LOCAL all end with the transaction, which asyncpg
    always ends), and the default reset costs a round trip on every request."""

    def get_reset_query(self) -> str:
        return ""


async def app_role(url: str) -> str | None:
    """`merchant_code_app` when the migrations made it and this login may take it on: the web
    processes then work with its rights (which cannot change or delete audit rows)."""
    conn = await connect(url)
    try:
        usable: bool = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)"
            " AND pg_has_role(current_user, $1, 'MEMBER')",
            APP_ROLE,
        )
    except asyncpg.UndefinedObjectError:
        usable = False
    finally:
        await conn.close()
    return APP_ROLE if usable else None


async def create_pool(
    url: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    role: str | None = None,
    statement_seconds: float = 0,
    connect_timeout: float = 10.0,
) -> asyncpg.Pool:
    """`statement_seconds`: the statement_timeout of the pool's connections (0: none)."""
    server_settings = {"role": role} if role else {}
    if statement_seconds:
        server_settings["statement_timeout"] = str(max(1, round(statement_seconds * 1000)))
    try:
        pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            init=_init_connection,
            # also bounds each reconnect after an outage: a dead server cannot hold a request
            timeout=connect_timeout,
            connection_class=PooledConnection,
            server_settings=server_settings or None,
        )
    except Exception as exc:
        raise StartupError(describe_connect_error(url, exc)) from None
    assert pool is not None
    return pool


def describe_connect_error(url: str, exc: BaseException) -> str:
    where = redact(url)
    if isinstance(exc, ConnectionRefusedError):
        return f"cannot reach PostgreSQL at {where}: connection refused (is the server running?)"
    if isinstance(exc, socket.gaierror):
        return f"cannot reach PostgreSQL at {where}: unknown host"
    if isinstance(exc, TimeoutError):
        return f"cannot reach PostgreSQL at {where}: no answer within the timeout"
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return f"PostgreSQL at {where} has no such database (create it first)"
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError | asyncpg.InvalidPasswordError):
        return f"PostgreSQL at {where} refused the login: {exc}"
    if isinstance(exc, OSError):
        return f"cannot reach PostgreSQL at {where}: {exc.strerror or exc}"
    return f"cannot use PostgreSQL at {where}: {type(exc).__name__}: {exc}"


def redact(url: str) -> str:
    """The URL without its password, fit for a log line or an error message."""
    head, sep, tail = url.partition("@")
    if not sep or ":" not in head.split("//", 1)[-1]:
        return url
    scheme, _, userinfo = head.partition("//")
    return f"{scheme}//{userinfo.split(':', 1)[0]}:***@{tail}"


# seconds a caller without settings at hand waits for a pooled connection (jobs, commands)
ACQUIRE_SECONDS = 10.0
# how long a client refused for a busy pool is told to wait
BUSY_RETRY_AFTER = 1

# the pools whose connection this request holds: a second connection from the same pool is
# refused at once, since a burst of such requests would hold every connection while waiting for
# one more, and the pool would never give one back. A set the request's middleware makes, filled
# by provide_db: Litestar resolves dependencies in child tasks, whose own settings of a context
# variable the handler would never see, but they share the set
_held: contextvars.ContextVar[set[int] | None] = contextvars.ContextVar("held_pools", default=None)


def start_request() -> None:
    """Called by the identity middleware at the start of every HTTP request."""
    _held.set(set())


class _Acquire:
    """`async with acquire(pool) as conn`: a pooled connection within `timeout` seconds, or Busy."""

    __slots__ = ("conn", "pool", "timeout")

    def __init__(self, pool: asyncpg.Pool, timeout: float) -> None:
        self.pool = pool
        self.timeout = timeout

    async def __aenter__(self) -> asyncpg.Connection:
        held = _held.get()
        if held and id(self.pool) in held:
            raise RuntimeError("this request already holds a connection of this pool: use it")
        if db_health.state.down:
            # known unreachable (the scan cache's poller tells when it is back): no connect attempt
            raise Unreachable(db_health.UNREACHABLE, retry_after=db_health.RETRY_AFTER)
        try:
            # a timer, not asyncpg's own timeout (a task for each acquire on Python 3.11); a
            # cancelled acquire gives its connection back to the pool
            async with asyncio.timeout(self.timeout):
                self.conn = await self.pool.acquire()
        except TimeoutError:
            # no connection came free in time, or a connect took CONNECT_SECONDS: a slow database
            # is not yet a lost one (the watermark's run of timed-out polls says when it is)
            raise Busy("the service is busy; try again in a moment", retry_after=BUSY_RETRY_AFTER) from None
        except db_health.LOST as exc:
            # the pool's connect failed (refused, no socket, the server shutting down): the same
            # 503 as once the state is known, never a 500
            db_health.state.lost(exc)
            raise Unreachable(db_health.UNREACHABLE, retry_after=db_health.RETRY_AFTER) from None
        # the pool hands out a proxy with every Connection method; callers type it as one
        return cast(asyncpg.Connection, self.conn)

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, db_health.LOST_UNDER_QUERY):
            # broken (the server went away under it): never handed to the next request (unless
            # the pool, having seen it close, took it back already)
            with contextlib.suppress(asyncpg.InterfaceError):
                self.conn.terminate()
        await self.pool.release(self.conn)


def acquire(pool: asyncpg.Pool, timeout: float = ACQUIRE_SECONDS) -> _Acquire:
    return _Acquire(pool, timeout)


async def provide_db(state: State) -> AsyncIterator[asyncpg.Connection]:
    """One connection and one transaction per request; an exception rolls it back. The body has
    been read already (body_guard.BodyGuard), so a slow client never holds a connection."""
    async with _transaction(state.pool, state.settings.acquire_seconds) as conn:
        yield conn


async def provide_search_db(state: State) -> AsyncIterator[asyncpg.Connection]:
    """provide_db for the public API, from its own pool (its bulkhead: bulkheads.py)."""
    async with _transaction(state.search_pool, state.settings.acquire_seconds) as conn:
        yield conn


@asynccontextmanager
async def _transaction(pool: asyncpg.Pool, timeout: float) -> AsyncIterator[asyncpg.Connection]:
    held = _held.get()
    async with acquire(pool, timeout) as conn:
        transaction = conn.transaction()
        await transaction.start()
        if held is not None:
            held.add(id(pool))
        try:
            yield conn
        except BaseException:
            # a connection the server dropped under the request has nothing to roll back (the pool
            # has taken it back already): the request's own error (503) goes on, not "the
            # underlying connection is closed" (500)
            with contextlib.suppress(asyncpg.InterfaceError, *db_health.LOST_UNDER_QUERY):
                await transaction.rollback()
            raise
        else:
            await transaction.commit()
        finally:
            if held is not None:
                held.discard(id(pool))
