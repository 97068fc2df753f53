"""Webhook subscriptions for outside systems: events about shops (grade changed, licence
expired, case opened, case closed), per area (and below), trade or shop, signed with an HMAC
header and delivered, retried and dead-lettered by the policy outbox (policies.deliver_channels).

Triggers record the events in `shop_event` as they happen (a profile's grade, a case opened or
closed) and the case intake records expired licences; `dispatch` fans them out, set-based, to
the subscriptions that match, as delivery rows on the subscription's channel. A subscriber
receives a JSON body with the event and the shop's public identity (never an owner's data),
`Idempotency-Key` (the same on every retry) and `X-Merchant-Code-Signature: sha256=<hex HMAC of
the body with the subscription's secret>`.
"""

from __future__ import annotations

import datetime
import secrets
from typing import Annotated, Any, Literal

import asyncpg
import msgspec

from merchant_code import audit, auth, db
from merchant_code.errors import Conflict, InvalidInput, NotFound
from merchant_code.feeds import ssrf

Event = Literal["grade_changed", "licence_expired", "case_opened", "case_closed"]
EVENTS: tuple[str, ...] = ("grade_changed", "licence_expired", "case_opened", "case_closed")
TITLES = {
    "grade_changed": "商户等级变更 · Grade changed",
    "licence_expired": "许可证过期 · Licence expired",
    "case_opened": "案件立案 · Case opened",
    "case_closed": "案件结案 · Case closed",
}
DISPATCH_BATCH = 5000


class SubscriptionIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
    url: Annotated[str, msgspec.Meta(pattern=r"^https?://\S+$", max_length=2000)]
    events: Annotated[list[Event], msgspec.Meta(min_length=1, max_length=4)]
    area_code: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{6,15}$")] | None = None
    trade: Annotated[str, msgspec.Meta(max_length=40)] | None = None
    shop_code: Annotated[str, msgspec.Meta(max_length=20)] | None = None


class Subscribed(msgspec.Struct, frozen=True):
    name: str
    secret: str  # shown once: the subscriber checks each body's HMAC with it


class Subscription(msgspec.Struct, frozen=True):
    name: str
    url: str
    events: list[str]
    area_code: str | None
    trade: str | None
    shop_code: str | None
    enabled: bool
    created_at: datetime.datetime
    delivered: int
    waiting: int
    dead: int


def _prefix(principal: auth.Principal) -> str | None:
    return None if principal.role == "admin" else principal.area_path


async def check_subscriber(url: str, allow_private: bool) -> None:
    """A subscriber's URL must lead to a public address unless the service allows private ones.
    Asked before the request takes its connection: it may wait seconds for DNS."""
    try:
        await ssrf.check_stored_url(url, allow_private)
    except ssrf.Refused as exc:
        hint = ": a subscriber must be reachable at a public address" if exc.private else ""
        raise InvalidInput("url", f"{exc}{hint}") from None


async def subscribe(
    conn: asyncpg.Connection,
    principal: auth.Principal,
    data: SubscriptionIn,
    request_id: str | None = None,
    *,
    allow_private: bool = False,
) -> Subscribed:
    """A manager subscribes an outside system (its URL checked by `check_subscriber`) to events
    inside their area (an admin: anywhere); audited (the secret is not)."""
    from merchant_code import records

    area_path = None
    if data.area_code is not None:
        area_path = await db.queries.get_area_path(conn, code=data.area_code)
        if area_path is None or not principal.covers(area_path):
            raise InvalidInput("area_code", "no area of yours has this code")
    shop_id = None
    if data.shop_code is not None:
        shop_id = (await records.shop_for_staff(conn, principal, data.shop_code)).id
    if area_path is None and shop_id is None and principal.role != "admin":
        raise InvalidInput("area_code", "name an area (or a shop) of yours")
    if data.trade is not None and not await db.queries.get_known_trades(conn, codes=[data.trade]):
        raise InvalidInput("trade", f"no trade has the code {data.trade}")
    secret = secrets.token_urlsafe(32)
    try:
        async with conn.transaction():
            await db.queries.create_subscription(
                conn,
                name=data.name,
                url=data.url,
                secret=secret,
                allow_private=allow_private,
                events=sorted(set(data.events)),
                area_path=area_path,
                trade=data.trade,
                shop_id=shop_id,
                created_by=principal.account_id,
            )
            await audit.append(
                conn,
                actor=principal.account_id,
                action="webhook.subscribe",
                object_type="webhook",
                object_id=data.name,
                request_id=request_id,
                detail={"url": data.url, "events": sorted(set(data.events)), "area": data.area_code,
                        "trade": data.trade, "shop": data.shop_code},
            )  # fmt: skip
    except asyncpg.UniqueViolationError:
        raise Conflict(f"a channel or subscription is already named {data.name}") from None
    return Subscribed(name=data.name, secret=secret)


async def list_for(conn: asyncpg.Connection, principal: auth.Principal) -> list[Subscription]:
    return await db.fetch_all(db.queries.list_subscriptions(conn, prefix=_prefix(principal)), Subscription)


async def unsubscribe(
    conn: asyncpg.Connection, principal: auth.Principal, name: str, request_id: str | None = None
) -> None:
    """Stop a subscription (kept, disabled: its delivery history stays readable); audited."""
    if not await db.queries.disable_subscription(conn, name=name, prefix=_prefix(principal)):
        raise NotFound("no such subscription in your area")
    await audit.append(
        conn,
        actor=principal.account_id,
        action="webhook.unsubscribe",
        object_type="webhook",
        object_id=name,
        request_id=request_id,
    )


async def ensure_event_policies(conn: asyncpg.Connection) -> None:
    for event in EVENTS:
        await db.queries.ensure_reminder(
            conn, reminder=f"event:{event}", title=TITLES[event], body_md=TITLES[event]
        )


async def dispatch(conn: asyncpg.Connection) -> tuple[int, int]:
    """Fan every waiting event out to its subscriptions; (events, deliveries)."""
    await ensure_event_policies(conn)
    events = deliveries = 0
    while True:
        row = await db.queries.dispatch_shop_events(conn, batch=DISPATCH_BATCH)
        events += row["events"]
        deliveries += row["deliveries"]
        if row["events"] < DISPATCH_BATCH:
            return events, deliveries


def payload(row: asyncpg.Record | dict[str, Any], key: str) -> dict[str, Any]:
    """What a subscriber receives: the event and the shop's public identity, nothing private."""
    detail = dict(row["detail"] or {})
    return {
        "id": key,
        "event": detail.pop("event", (row["reminder"] or "").removeprefix("event:")),
        "at": detail.pop("at", None),
        "shop": {"code": row["shop_code"], "name": row["shop_name"]},
        "data": detail,
    }


async def licence_expired(conn: asyncpg.Connection, shop_id: int, detail: dict[str, Any]) -> None:
    """The case intake saw a licence expire (each once): an event for the subscribers."""
    await db.queries.add_shop_event(conn, shop_id=shop_id, kind="licence_expired", detail=detail)
