"""Cases for the people who handle them (inspectors and managers of the area), for the shop's
owner (cases about their shop: read, reply with evidence), and the routing table for managers.

The citizen's side (the complaint form, the tracking page, reopen) is in complaints.py; Open311
in open311.py.
"""

from __future__ import annotations

import datetime
import re
from typing import Annotated, Any, Literal

import asyncpg
import msgspec
from litestar import Request, Response, delete, get, post, put
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_201_CREATED

from merchant_code import access, audit, auth, cases, db, forms, records, uploads
from merchant_code.bodies import body_of
from merchant_code.errors import DomainError, InvalidInput, NotFound
from merchant_code.profile_cache import full_profile
from merchant_code.routes.auth import english
from merchant_code.routes.params import UUID_PATTERN, PageSize

Lang = FromQuery[Literal["zh", "en"] | None]
CaseStatus = Literal["open", "assigned", "in_progress", "resolved", "closed"]
Filter = Annotated[str | None, QueryParameter(max_length=40)]
CaseBefore = Annotated[
    str | None,
    QueryParameter(
        pattern=r"^[Cc][Ss]-[0-9A-Za-z-]{1,40}$",
        description="the `public_id` of the last case of the page before",
    ),
]


class CaseFilters(msgspec.Struct, frozen=True):
    status: CaseStatus | None = None
    department: str | None = None
    overdue: bool | None = None
    source: cases.Source | None = None
    category: str | None = None


@get("/api/v1/cases", opt={"access": "staff"}, tags=["cases"])
async def api_list_cases(
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    mine: FromQuery[bool] = False,
    status: FromQuery[CaseStatus | None] = None,
    department: Filter = None,
    overdue: FromQuery[bool | None] = None,
    source: FromQuery[cases.Source | None] = None,
    category: Filter = None,
    limit: PageSize = 50,
    before: CaseBefore = None,
) -> list[cases.CaseSummary]:
    """Cases of the caller's area (`mine`: assigned to the caller), newest first, filtered; the
    next page: `before` the last case's `public_id`."""
    return await cases.list_for_staff(
        conn,
        principal,
        mine=mine,
        limit=limit,
        status=status,
        department=department,
        overdue=overdue,
        source=source,
        category=category,
        before=before,
    )


class ManualCase(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    shop_code: Annotated[str, msgspec.Meta(max_length=20)]
    category: Annotated[str, msgspec.Meta(max_length=40)]
    description: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
    due: datetime.datetime | None = None


class CaseOpened(msgspec.Struct, frozen=True):
    case: str
    joined: bool
    department: str | None
    due: datetime.datetime | None


@post("/api/v1/cases", opt={"access": "manager"}, tags=["cases"], status_code=HTTP_201_CREATED)
async def api_open_case(
    request: Request[Any, Any, Any],
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    data: JSONBody[ManualCase],
) -> CaseOpened:
    """A manager opens a case by hand for a shop of their area (joins an open one about the same
    problem); routed and given its due time like any other."""
    shop = await records.shop_for_staff(conn, principal, data.shop_code)
    if data.due is not None and data.due.tzinfo is None:
        raise InvalidInput("due", "give the due time with its offset")
    opened = await cases.open_case(
        conn,
        shop_id=shop.id,
        source="manual",
        category=data.category,
        description=data.description,
        due=data.due,
        via="api",
        actor=principal.account_id,
    )
    await audit.append(
        conn,
        actor=principal.account_id,
        action="case.open",
        object_type="case",
        object_id=opened.case_number,
        request_id=access.request_id_of(request),
        detail={"shop": shop.code, "category": data.category, "joined": opened.joined},
    )
    return CaseOpened(
        case=opened.case_number, joined=opened.joined, department=opened.department, due=opened.due
    )


@get("/api/v1/cases/{number:str}", opt={"access": "staff"}, tags=["cases"])
async def api_get_case(
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    number: FromPath[str],
) -> cases.CaseDetail:
    """One case with its whole trail, for staff of its area (anyone else: 404)."""
    return await cases.detail(conn, await cases.case_for_staff(conn, principal, number))


class Moved(msgspec.Struct, frozen=True):
    status: str


@post("/api/v1/cases/{number:str}/transitions", opt={"access": "staff"}, tags=["cases"], status_code=200)
async def api_transition(
    request: Request[Any, Any, Any],
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    number: FromPath[str],
    data: JSONBody[cases.TransitionIn],
) -> Moved:
    """`{action: assign|start|resolve|close|reopen|note, note?, public?, assignee?}`. An illegal
    move (closing an unassigned case, closing a rectification case before a follow-up
    inspection passes, reopening after the window) is 409."""
    moved = await cases.transition(conn, principal, number, data, request_id=access.request_id_of(request))
    return Moved(status=moved)


@get("/api/v1/merchant/cases", opt={"access": "merchant"}, tags=["merchant"])
async def api_merchant_cases(
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    limit: PageSize = 50,
) -> list[cases.CaseSummary]:
    """Cases about the caller's shops (who handles them is not shown)."""
    return await cases.list_for_merchant(conn, principal, limit)


class Reply(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    note: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]


async def _reply(
    request: Request[Any, Any, Any], conn: asyncpg.Connection, principal: auth.Principal, number: str
) -> None:
    case = await db.queries.get_case(conn, public_id=number.strip().upper())
    if case is None or case["shop_id"] not in principal.shop_ids:
        raise NotFound("no such case")
    body, photo = await forms.read(request, Reply, file_field="photo")
    async with conn.transaction():
        photo_id = None
        if photo:
            photo_id = await uploads.store(
                conn,
                field="photo",
                data=photo,
                shop_id=case["shop_id"],
                purpose="case_evidence",
                account_id=principal.account_id,
            )
        await cases.merchant_reply(conn, principal, number, body.note, photo_id)


@post(
    "/api/v1/merchant/cases/{number:str}/replies",
    opt={"access": "merchant"},
    tags=["merchant"],
    status_code=HTTP_201_CREATED,
    request_max_body_size=uploads.MAX_REQUEST_BYTES,
    operation_class=body_of(Reply, file_field="photo"),
)
async def api_merchant_reply(
    request: Request[Any, Any, Any],
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    number: FromPath[str],
) -> None:
    """The owner answers a case about their shop: `note`, and as multipart an optional `photo`
    (evidence of rectification: JPEG, PNG or WebP, at most 5 MB)."""
    await _reply(request, conn, principal, number)


# --- routing table -----------------------------------------------------------------------------


class Route(msgspec.Struct, frozen=True):
    id: str  # the row's public id (DELETE takes it)
    area_code: str | None
    trade: str | None
    category: str | None
    department: str
    updated_at: datetime.datetime


class RouteIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    department: Annotated[str, msgspec.Meta(max_length=40)]
    area_code: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{6,15}$")] | None = None
    trade: Annotated[str, msgspec.Meta(max_length=40)] | None = None
    category: Annotated[str, msgspec.Meta(max_length=40)] | None = None


def _prefix(principal: auth.Principal) -> str | None:
    return None if principal.role == "admin" else principal.area_path


@get("/api/v1/manage/routes", opt={"access": "manager"}, tags=["cases"])
async def api_routes(
    conn: NamedDependency[asyncpg.Connection], principal: NamedDependency[auth.Principal]
) -> list[Route]:
    """The routing table as it applies to the caller's area: trade x category -> department per
    area (no area: everywhere). The most specific row wins: the deepest area, then a named
    category, then a named trade."""
    return await db.fetch_all(db.queries.list_routes(conn, prefix=_prefix(principal)), Route)


@put("/api/v1/manage/routes", opt={"access": "manager"}, tags=["cases"])
async def api_set_route(
    request: Request[Any, Any, Any],
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    data: JSONBody[RouteIn],
) -> Route:
    """Add or change one row. A manager's rows apply inside their own area; a row without an area
    (the whole jurisdiction) is the admin's."""
    area_id = None
    if data.area_code is None:
        if principal.role != "admin":
            raise InvalidInput(
                "area_code", "name an area of your own (only an admin sets jurisdiction-wide rules)"
            )
    else:
        area = await db.queries.get_area_by_code(conn, code=data.area_code)
        if area is None or not principal.covers(area["path"]):
            raise InvalidInput("area_code", "no area of yours has this code")
        area_id = area["id"]
    known = await db.queries.route_codes_known(
        conn, department=data.department, trade=data.trade, category=data.category
    )
    for field in ("department", "trade", "category"):
        if not known[field]:
            raise InvalidInput(field, f"no {field} has the code {getattr(data, field)}")
    route_id = await db.queries.upsert_route(
        conn,
        area_id=area_id,
        trade=data.trade,
        category=data.category,
        department=data.department,
        actor=principal.account_id,
    )
    await audit.append(
        conn,
        actor=principal.account_id,
        action="route.set",
        object_type="route",
        object_id=route_id,
        request_id=access.request_id_of(request),
        detail=msgspec.structs.asdict(data),
    )
    rows = await db.fetch_all(db.queries.list_routes(conn, prefix=_prefix(principal)), Route)
    return next(r for r in rows if r.id == route_id)


@delete("/api/v1/manage/routes/{route_id:str}", opt={"access": "manager"}, tags=["cases"])
async def api_delete_route(
    request: Request[Any, Any, Any],
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    route_id: FromPath[str],
) -> None:
    """Remove a row of the caller's area (jurisdiction-wide rows stay: they are the fallback)."""
    known = re.fullmatch(UUID_PATTERN, route_id) is not None
    if not known or not await db.queries.delete_route(conn, public_id=route_id, prefix=_prefix(principal)):
        raise NotFound("no such route in your area")
    await audit.append(conn, actor=principal.account_id, action="route.delete", object_type="route",
                       object_id=route_id, request_id=access.request_id_of(request))  # fmt: skip


# --- pages -------------------------------------------------------------------------------------


@get("/cases", opt={"access": "staff"}, tags=["pages"], include_in_schema=False)
async def cases_page(
    request: Request[Any, Any, Any],
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    mine: FromQuery[bool] = False,
    status: FromQuery[CaseStatus | None] = None,
    overdue: FromQuery[bool | None] = None,
    department: Filter = None,
    lang: Lang = None,
) -> Template:
    """My cases and my area's cases, with filters."""
    items = await cases.list_for_staff(
        conn, principal, mine=mine, limit=100, status=status, overdue=overdue, department=department
    )
    context = {
        "en": english(request, lang),
        "items": items,
        "mine": mine,
        "status": status,
        "overdue": overdue,
        "department": department,
        "departments": [dict(r) async for r in db.queries.list_departments(conn)],
    }
    return Template("cases.html.j2", context=context)


@get("/cases/{number:str}", opt={"access": "staff"}, tags=["pages"], include_in_schema=False)
async def case_page(
    request: Request[Any, Any, Any],
    state: State,
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    number: FromPath[str],
    error: FromQuery[str | None] = None,
    lang: Lang = None,
) -> Template:
    """A case with the shop's profile beside it, and the forms to move it on."""
    row = await cases.case_for_staff(conn, principal, number)
    case = await cases.detail(conn, row)
    profile: dict[str, Any] | None = None
    if row["shop_code"]:
        profile_row = await full_profile(conn, state.profile_cache, row["shop_code"])
        profile = profile_row["full_doc"]
    staff = [dict(r) async for r in db.queries.list_assignable_staff(conn, area_path=row["area_path"])]
    context = {
        "en": english(request, lang),
        "case": case,
        "profile": profile,
        "staff": staff,
        "error": error,
        "me": principal,
    }
    return Template("case.html.j2", context=context)


class TransitionForm(msgspec.Struct, frozen=True):
    action: cases.Action
    note: str | None = None
    public: bool = False
    assignee: str | None = None


@post("/cases/{number:str}/transitions", opt={"access": "staff"}, tags=["pages"], include_in_schema=False)
async def case_transition_submit(
    request: Request[Any, Any, Any],
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    number: FromPath[str],
    lang: Lang = None,
) -> Response[Any]:
    await cases.case_for_staff(conn, principal, number)  # not this person's case: 404, whatever the form
    back = f"/cases/{number.strip().upper()}" + ("?lang=en" if lang == "en" else "")
    sep = "&" if "?" in back else "?"
    try:
        form, _ = await forms.read(request, TransitionForm)
        change = cases.TransitionIn(
            action=form.action, note=form.note, public=form.public, assignee=form.assignee or None
        )
        await cases.transition(conn, principal, number, change, request_id=access.request_id_of(request))
    except DomainError as exc:
        if isinstance(exc, NotFound):
            raise
        return Redirect(path=f"{back}{sep}error={exc.slug}", status_code=303)
    return Redirect(path=back, status_code=303)


@get("/merchant/cases", opt={"access": "merchant"}, tags=["pages"], include_in_schema=False)
async def merchant_cases_page(
    request: Request[Any, Any, Any],
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    done: FromQuery[bool] = False,
    error: FromQuery[str | None] = None,
    lang: Lang = None,
) -> Template:
    """Cases about the merchant's shops, each with a form to reply and send evidence."""
    items = await cases.list_for_merchant(conn, principal, 50)
    context = {"en": english(request, lang), "items": items, "done": done, "error": error}
    return Template("merchant_cases.html.j2", context=context)


@post(
    "/merchant/cases/{number:str}/replies",
    opt={"access": "merchant"},
    tags=["pages"],
    include_in_schema=False,
    request_max_body_size=uploads.MAX_REQUEST_BYTES,
)
async def merchant_reply_submit(
    request: Request[Any, Any, Any],
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    number: FromPath[str],
    lang: Lang = None,
) -> Response[Any]:
    back = "/merchant/cases" + ("?lang=en&" if lang == "en" else "?")
    try:
        await _reply(request, conn, principal, number)
    except DomainError as exc:
        if isinstance(exc, NotFound):
            raise
        return Redirect(path=f"{back}error={getattr(exc, 'field', exc.slug)}", status_code=303)
    return Redirect(path=f"{back}done=true", status_code=303)
