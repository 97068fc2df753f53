"""Liveness and readiness, for load balancers and the demo command."""

from __future__ import annotations

import asyncio

import msgspec
from litestar import get
from litestar.datastructures import State

from merchant_code import db, db_health, migrate
from merchant_code.errors import Unavailable


class Alive(msgspec.Struct):
    status: str


class Ready(msgspec.Struct):
    status: str
    migrations: int


@get("/healthz", opt={"access": "public"}, tags=["health"], sync_to_thread=False)
def healthz() -> Alive:
    """The process answers; says nothing about the database."""
    return Alive(status="alive")


@get("/readyz", opt={"access": "public"}, tags=["health"])
async def readyz(state: State) -> Ready:
    """The database answers and every migration file is applied, unedited. While the scan
    cache's poller knows the database to be unreachable: 503 "degraded", and since when (no
    round trip per probe)."""
    health = db_health.state
    if health.down and health.down_wall is not None:
        since = health.down_wall.isoformat(timespec="seconds")
        raise Unavailable(f"degraded: database unreachable since {since} ({health.reason})", retry_after=2)
    try:
        async with asyncio.timeout(3), db.acquire(state.scan_pool, 3) as conn:
            done = await migrate.applied(conn)
    except (OSError, TimeoutError, Exception) as exc:
        unreachable = f"database unreachable: {type(exc).__name__}"
        raise Unavailable(unreachable, retry_after=db_health.RETRY_AFTER) from None
    files = state.migrations
    if issues := migrate.problems(files, done) or [
        f"{m.name} is not applied" for m in migrate.pending(files, done)
    ]:
        raise Unavailable("; ".join(issues))
    return Ready(status="ready", migrations=len(done))
