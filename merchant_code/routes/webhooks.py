"""Webhook subscriptions of outside systems, managed by managers (inside their area) and admins."""

from __future__ import annotations

from typing import Any

import asyncpg
from litestar import Request, delete, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_201_CREATED

from merchant_code import access, auth, db, webhooks


@get("/api/v1/manage/webhooks", opt={"access": "manager"}, tags=["webhooks"])
async def api_list_webhooks(
    conn: NamedDependency[asyncpg.Connection], principal: NamedDependency[auth.Principal]
) -> list[webhooks.Subscription]:
    """The subscriptions of the caller's area, with what was delivered, waits and died."""
    return await webhooks.list_for(conn, principal)


@post("/api/v1/manage/webhooks", opt={"access": "manager"}, tags=["webhooks"], status_code=HTTP_201_CREATED)
async def api_subscribe(
    request: Request[Any, Any, Any],
    principal: NamedDependency[auth.Principal],
    data: JSONBody[webhooks.SubscriptionIn],
    state: State,
) -> webhooks.Subscribed:
    """Subscribe an outside system (`url`) to `events` (grade_changed, licence_expired,
    case_opened, case_closed) about the shops of an area (and below), a trade in it, or one
    shop. The answer holds the HMAC secret, once. The URL must lead to a public address
    (loopback, private and link-local ones are refused) unless the service allows private ones."""
    settings = state.settings
    allow = settings.webhooks_allow_private
    await webhooks.check_subscriber(data.url, allow)  # DNS, so before the connection is taken
    async with db.acquire(state.pool, settings.acquire_seconds) as conn, conn.transaction():
        request_id = access.request_id_of(request)
        return await webhooks.subscribe(conn, principal, data, request_id, allow_private=allow)


@delete("/api/v1/manage/webhooks/{name:str}", opt={"access": "manager"}, tags=["webhooks"])
async def api_unsubscribe(
    request: Request[Any, Any, Any],
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    name: FromPath[str],
) -> None:
    """Stop a subscription of the caller's area."""
    await webhooks.unsubscribe(conn, principal, name, access.request_id_of(request))
