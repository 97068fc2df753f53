"""A shop's record for the people allowed to see more than a citizen: its owner and the
inspectors and managers whose area covers it. Each gets their own struct (see views.py)."""

from __future__ import annotations

from typing import Annotated, Any

import asyncpg
import msgspec
from litestar import Request, get, patch
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter

from merchant_code import access, auth, db, notices, records
from merchant_code.codes import parse_shop_code
from merchant_code.errors import NotFound
from merchant_code.profile_cache import full_profile
from merchant_code.routes.params import PageSize
from merchant_code.routes.scan import inspector_view, reveal_or_mask
from merchant_code.views import InspectorShop, MerchantShop, Page, ShopListItem

Unset = msgspec.UnsetType


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
    state: State,
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    code: FromPath[str],
) -> MerchantShop:
    """The owner's view of one of their shops, their own personal data included."""
    row = await full_profile(conn, state.profile_cache, parse_shop_code(code))
    if row["shop_id"] not in principal.shop_ids:
        raise NotFound("no such shop")
    return msgspec.convert(await notices.with_own(conn, row, "merchant_doc"), MerchantShop)


class Changed(msgspec.Struct, frozen=True):
    """What a write changed; the profile follows within seconds (rebuilt off the request)."""

    changed: dict[str, Any]


@patch("/api/v1/merchant/shops/{code:str}", opt={"access": "merchant"}, tags=["merchant"])
async def update_my_shop(
    request: Request[Any, Any, Any],
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    code: FromPath[str],
    data: JSONBody[records.ShopUpdate],
) -> Changed:
    """Change the shop's public contact details; audited, and the profile is rebuilt."""
    shop = await records.shop_for_owner(conn, principal, code)
    changed = await records.update_details(conn, principal, shop, data, access.request_id_of(request))
    return Changed(changed=changed)


@get("/api/v1/inspect/shops", opt={"access": "staff"}, tags=["inspect"])
async def shops_in_area(
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    limit: PageSize = 50,
    after: Annotated[str, QueryParameter(max_length=13, pattern=r"^[0-9A-Za-z]*$")] = "",
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
    state: State,
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    code: FromPath[str],
) -> InspectorShop:
    """The full record, with the risk score and its reasons, for staff whose area covers the
    shop (anyone else: 404). Personal data is masked unless the account holds `pii:read`; each
    unmasked read is audited."""
    row = await full_profile(conn, state.profile_cache, parse_shop_code(code))
    access.require_shop(principal, -1, row["area_path"])
    doc = await notices.with_own(conn, row, "full_doc")
    return await reveal_or_mask(conn, principal, inspector_view(doc), access.request_id_of(request))
