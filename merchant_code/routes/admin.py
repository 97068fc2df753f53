"""What managers and administrators look after: accounts in their area, the audit trail."""

from __future__ import annotations

import datetime
from typing import Annotated, Any

import asyncpg
import msgspec
from litestar import get
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from merchant_code import auth, db
from merchant_code.routes.params import PageSize


class AccountItem(msgspec.Struct, frozen=True):
    login: str
    role: str
    display_name: str
    area_code: str | None
    disabled: bool


class AccountPage(msgspec.Struct, frozen=True):
    items: list[AccountItem]
    next: str | None


class AuditItem(msgspec.Struct, frozen=True):
    id: str  # the row's chain hash (hex): what `audit verify` and the signed checkpoints hold to
    at: datetime.datetime
    actor: str | None
    action: str
    object_type: str
    object_id: str | None
    request_id: str | None
    detail: dict[str, Any]


class AuditPage(msgspec.Struct, frozen=True):
    items: list[AuditItem]
    next: str | None


@get("/api/v1/accounts", opt={"access": "manager"}, tags=["admin"])
async def list_accounts(
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    limit: PageSize = 50,
    after: Annotated[str, QueryParameter(max_length=64, pattern=r"^[a-z0-9._-]*$")] = "",
) -> AccountPage:
    """Staff accounts of the manager's area (an admin: every account), by login."""
    prefix = None if principal.role == "admin" else principal.area_path
    items = await db.fetch_all(
        db.queries.list_accounts_in_scope(conn, prefix=prefix, after=after, limit=limit), AccountItem
    )
    return AccountPage(items=items, next=items[-1].login if len(items) == limit else None)


@get("/api/v1/audit", opt={"access": "admin"}, tags=["admin"])
async def list_audit(
    conn: NamedDependency[asyncpg.Connection],
    limit: PageSize = 50,
    before: Annotated[
        str | None,
        QueryParameter(pattern=r"^[0-9A-Fa-f]{64}$", description="the `next` of the page before"),
    ] = None,
) -> AuditPage:
    """The audit trail, newest first; each row named by its chain hash."""
    items = await db.fetch_all(db.queries.list_audit_events(conn, before=before, limit=limit), AuditItem)
    return AuditPage(items=items, next=items[-1].id if len(items) == limit else None)
