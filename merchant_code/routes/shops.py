"""A shop's record for the people allowed to see more than a citizen: its owner and the
inspectors and managers whose area covers it. Each gets their own struct (see views.py)."""

from __future__ import annotations

import datetime
from typing import Annotated, Any

import asyncpg
import msgspec
from litestar import Request, get, patch
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter

from merchant_code import access, audit, auth, db, masking
from merchant_code.codes import parse_shop_code
from merchant_code.errors import NotFound
from merchant_code.views import InspectorShop, MerchantShop, Page, ShopListItem

# every list answers at most 100 items a page; asking for more is a 400 naming `limit`
PageSize = Annotated[int, QueryParameter(ge=1, le=100, description="items per page, at most 100")]
Unset = msgspec.UnsetType


async def shop_record(conn: asyncpg.Connection, raw_code: str) -> asyncpg.Record:
    code = parse_shop_code(raw_code)
    row = await db.queries.get_shop_record_by_code(conn, code=code, today=datetime.date.today())
    if row is None:
        raise NotFound("no such shop")
    record: asyncpg.Record = row
    return record


def masked(shop: InspectorShop) -> InspectorShop:
    staff = [
        msgspec.structs.replace(
            s,
            name=masking.name(s.name) or "",
            phone=masking.phone(s.phone),
            id_number=masking.id_number(s.id_number),
            health_cert_number=masking.certificate(s.health_cert_number),
        )
        for s in shop.staff
    ]
    return msgspec.structs.replace(
        shop,
        owner_name=masking.name(shop.owner_name),
        owner_phone=masking.phone(shop.owner_phone),
        owner_id_number=masking.id_number(shop.owner_id_number),
        staff=staff,
        pii_masked=True,
    )


@get("/api/v1/merchant/shops", opt={"access": "merchant"}, tags=["merchant"])
async def my_shops(
    conn: NamedDependency[asyncpg.Connection], principal: NamedDependency[auth.Principal]
) -> list[ShopListItem]:
    """The shops this merchant account owns."""
    return await db.fetch_all(
        db.queries.list_shops_of_account(conn, account_id=principal.account_id), ShopListItem
    )


@get("/api/v1/merchant/shops/{code:str}", opt={"access": "merchant"}, tags=["merchant"])
async def my_shop(
    conn: NamedDependency[asyncpg.Connection], principal: NamedDependency[auth.Principal], code: FromPath[str]
) -> MerchantShop:
    """The owner's view of one of their shops, their own personal data included."""
    row = await shop_record(conn, code)
    if row["id"] not in principal.shop_ids:
        raise NotFound("no such shop")
    return msgspec.convert(dict(row), MerchantShop)


class ShopUpdate(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The fields a merchant keeps up to date themselves; absent fields stay as they are."""

    opening_hours: Annotated[str, msgspec.Meta(max_length=200)] | msgspec.UnsetType | None = msgspec.UNSET
    phone: Annotated[str, msgspec.Meta(pattern=r"^[0-9+() -]{5,30}$")] | msgspec.UnsetType | None = (
        msgspec.UNSET
    )
    name_en: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | msgspec.UnsetType | None = (
        msgspec.UNSET
    )


@patch("/api/v1/merchant/shops/{code:str}", opt={"access": "merchant"}, tags=["merchant"])
async def update_my_shop(
    request: Request[Any, Any, Any],
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    code: FromPath[str],
    data: JSONBody[ShopUpdate],
) -> MerchantShop:
    """Change the shop's public contact details; the change is audited and the profile rebuilt."""
    row = await shop_record(conn, code)
    if row["id"] not in principal.shop_ids:
        raise NotFound("no such shop")
    changes = msgspec.structs.asdict(data)
    changed = {k: v for k, v in changes.items() if v is not msgspec.UNSET and v != row[k]}
    if changed:
        merged = {k: changed.get(k, row[k]) for k in ("opening_hours", "phone", "name_en")}
        await db.queries.update_shop_contact(conn, id=row["id"], **merged)
        await db.queries.mark_profile_dirty(conn, shop_id=row["id"])
        await audit.append(
            conn,
            actor=principal.account_id,
            action="shop.update",
            object_type="shop",
            object_id=row["code"],
            request_id=access.request_id_of(request),
            detail={"changed": changed},
        )
        row = await shop_record(conn, code)
    return msgspec.convert(dict(row), MerchantShop)


@get("/api/v1/inspect/shops", opt={"access": "staff"}, tags=["inspect"])
async def shops_in_area(
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    limit: PageSize = 50,
    after: Annotated[str, QueryParameter(max_length=13)] = "",
) -> Page:
    """Shops in the caller's area and below it, by code, at most 100 a page."""
    prefix = None if principal.role == "admin" else principal.area_path
    items = await db.fetch_all(
        db.queries.list_shops_in_scope(conn, prefix=prefix, after=after, limit=limit), ShopListItem
    )
    return Page(items=items, next=items[-1].code if len(items) == limit else None)


@get("/api/v1/inspect/shops/{code:str}", opt={"access": "staff"}, tags=["inspect"])
async def inspect_shop(
    request: Request[Any, Any, Any],
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    code: FromPath[str],
) -> InspectorShop:
    """The full record for staff whose area covers the shop (anyone else: 404). Personal data is
    masked unless the account holds `pii:read`; each unmasked read is audited."""
    row = await shop_record(conn, code)
    access.require_shop(principal, -1, row["area_path"])
    shop = msgspec.convert({**dict(row), "pii_masked": False}, InspectorShop)
    if "pii:read" not in principal.permissions:
        return masked(shop)
    await audit.append(
        conn,
        actor=principal.account_id,
        action="pii.read",
        object_type="shop",
        object_id=shop.code,
        request_id=access.request_id_of(request),
        detail={"fields": _pii_fields(shop)},
    )
    return shop


def _pii_fields(shop: InspectorShop) -> list[str]:
    fields = [f for f in ("owner_name", "owner_phone", "owner_id_number") if getattr(shop, f)]
    if shop.staff:
        fields.append(f"staff[{len(shop.staff)}]")
    return fields
