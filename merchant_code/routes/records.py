"""Merchant submissions, inspections on patrol and their review: an API (JSON or a form with an
image, answering JSON) and the same writes from the pages (a form, answered by a redirect back
to the shop's page). Object checks: a merchant only their own shops, staff only their area."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, Any

import asyncpg
import msgspec
from litestar import Request, Response, get, post
from litestar.background_tasks import BackgroundTask
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter
from litestar.response import Redirect
from litestar.status_codes import HTTP_201_CREATED

from merchant_code import access, auth, db, forms, profiles, records, uploads
from merchant_code.bodies import body_of
from merchant_code.errors import DomainError, InvalidInput
from merchant_code.routes.params import PageSize, check_coordinates

UPLOAD_LIMIT = uploads.MAX_REQUEST_BYTES


async def rebuild_soon(state: State) -> None:
    """After the response: bring dirty profiles up to date now rather than at the next tick."""
    await profiles.drain_soon(state.jobs_pool, state.settings.base_url)


def _back(code: str, outcome: str, en: bool) -> str:
    return f"/s/{code}?{outcome}{'&lang=en' if en else ''}#forms"


def _en(request: Request[Any, Any, Any]) -> bool:
    return request.query_params.get("lang") == "en"


async def page_write(
    request: Request[Any, Any, Any], state: State, code: str, what: str, write: Awaitable[Any]
) -> Response[Any]:
    """A write from a page's form, answered by a redirect back to the shop's page: saying it was
    done (and bringing the profile up to date right after), or which field to check. A 404 (not
    this person's shop or submission) stays a 404."""
    try:
        await write
    except DomainError as exc:
        if exc.status == 404:
            raise
        field = getattr(exc, "field", "body")
        return Redirect(path=_back(code, f"error={what}.{field}", _en(request)), status_code=303)
    return Redirect(
        path=_back(code, f"done={what}", _en(request)),
        status_code=303,
        background=BackgroundTask(rebuild_soon, state),
    )


# --- merchant ---------------------------------------------------------------------------------

SUBMISSIONS: dict[str, tuple[type[Any], Any]] = {
    "licences": (records.LicenceSubmission, records.submit_licence),
    "staff": (records.StaffSubmission, records.submit_staff),
    "honours": (records.HonourSubmission, records.submit_honour),
}


async def _submit(
    request: Request[Any, Any, Any], conn: asyncpg.Connection, principal: auth.Principal, code: str, what: str
) -> records.Submitted:
    shape, submit = SUBMISSIONS[what]
    shop = await records.shop_for_owner(conn, principal, code)
    body, image = await forms.read(request, shape, file_field="image")
    result: records.Submitted = await submit(
        conn, principal, shop, body, image, access.request_id_of(request)
    )
    return result


def _merchant_api(what: str, summary: str) -> Any:
    @post(
        f"/api/v1/merchant/shops/{{code:str}}/{what}",
        opt={"access": "merchant"},
        tags=["merchant"],
        status_code=HTTP_201_CREATED,
        request_max_body_size=UPLOAD_LIMIT,
        name=f"api_submit_{what}",
        summary=summary,
        operation_class=body_of(SUBMISSIONS[what][0], file_field="image"),
        description="JSON, or multipart/form-data with an optional `image` (JPEG, PNG or WebP, at most"
        " 5 MB). Enters as pending; counts once an inspector verifies it.",
    )
    async def handler(
        request: Request[Any, Any, Any],
        state: State,
        conn: NamedDependency[asyncpg.Connection],
        principal: NamedDependency[auth.Principal],
        code: FromPath[str],
    ) -> Response[records.Submitted]:
        result = await _submit(request, conn, principal, code, what)
        return Response(result, status_code=201, background=BackgroundTask(rebuild_soon, state))

    return handler


def _merchant_page(what: str) -> Any:
    @post(
        f"/s/{{code:str}}/{what}",
        opt={"access": "merchant"},
        tags=["pages"],
        include_in_schema=False,
        request_max_body_size=UPLOAD_LIMIT,
        name=f"page_submit_{what}",
    )
    async def handler(
        request: Request[Any, Any, Any],
        state: State,
        conn: NamedDependency[asyncpg.Connection],
        principal: NamedDependency[auth.Principal],
        code: FromPath[str],
    ) -> Response[Any]:
        return await page_write(request, state, code, what, _submit(request, conn, principal, code, what))

    return handler


api_submit_licence = _merchant_api("licences", "Submit a new or renewed licence")
api_submit_staff = _merchant_api("staff", "Add a staff member and their health certificate")
api_submit_honour = _merchant_api("honours", "Submit an honour")
page_submit_licence = _merchant_page("licences")
page_submit_staff = _merchant_page("staff")
page_submit_honour = _merchant_page("honours")


@post(
    "/api/v1/merchant/inspections/{id:str}/reply",
    opt={"access": "merchant"},
    tags=["merchant"],
    status_code=200,
    operation_class=body_of(records.Reply),
)
async def api_reply(
    request: Request[Any, Any, Any],
    state: State,
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    id: FromPath[str],
) -> Response[dict[str, str]]:
    """The merchant's one reply to an inspection of their shop, shown beside the grade."""
    await records.inspection_for_owner(conn, principal, id)
    body, _ = await forms.read(request, records.Reply)
    await records.reply_to_inspection(conn, principal, id, body, access.request_id_of(request))
    return Response({"id": id, "reply": body.reply}, background=BackgroundTask(rebuild_soon, state))


@post(
    "/s/{code:str}/inspections/{id:str}/reply",
    opt={"access": "merchant"},
    tags=["pages"],
    include_in_schema=False,
)
async def page_reply(
    request: Request[Any, Any, Any],
    state: State,
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    code: FromPath[str],
    id: FromPath[str],
) -> Response[Any]:
    await records.inspection_for_owner(conn, principal, id)

    async def write() -> None:
        body, _ = await forms.read(request, records.Reply)
        await records.reply_to_inspection(conn, principal, id, body, access.request_id_of(request))

    return await page_write(request, state, code, "reply", write())


@post("/s/{code:str}/details", opt={"access": "merchant"}, tags=["pages"], include_in_schema=False)
async def page_details(
    request: Request[Any, Any, Any],
    state: State,
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    code: FromPath[str],
) -> Response[Any]:
    shop = await records.shop_for_owner(conn, principal, code)
    form = await request.form()
    fields = {k: (str(form.get(k) or "").strip() or None) for k in ("opening_hours", "phone") if k in form}
    try:
        body = msgspec.convert(fields, records.ShopUpdate)
        await records.update_details(conn, principal, shop, body, access.request_id_of(request))
    except msgspec.ValidationError as exc:
        field = "phone" if "phone" in str(exc) else "opening_hours"
        return Redirect(path=_back(shop.code, f"error=details.{field}", _en(request)), status_code=303)
    return Redirect(
        path=_back(shop.code, "done=details", _en(request)),
        status_code=303,
        background=BackgroundTask(rebuild_soon, state),
    )


# --- inspectors -------------------------------------------------------------------------------


async def _file(
    request: Request[Any, Any, Any], conn: asyncpg.Connection, principal: auth.Principal, code: str
) -> records.Filed:
    shop = await records.shop_for_staff(conn, principal, code)
    body, photo = await forms.read(
        request, records.InspectionReport, file_field="photo", lists=("violations",)
    )
    return await records.file_inspection(conn, principal, shop, body, photo, access.request_id_of(request))


@post(
    "/api/v1/inspect/shops/{code:str}/inspections",
    opt={"access": "staff"},
    tags=["inspect"],
    status_code=HTTP_201_CREATED,
    request_max_body_size=UPLOAD_LIMIT,
    operation_class=body_of(records.InspectionReport, file_field="photo"),
)
async def api_file_inspection(
    request: Request[Any, Any, Any],
    state: State,
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    code: FromPath[str],
) -> Response[records.Filed]:
    """File an inspection on the spot: kind, result (pass / rectify / fail), score, violations
    from the code list, grade (food trades), rectification deadline, an optional `photo`."""
    result = await _file(request, conn, principal, code)
    return Response(result, status_code=201, background=BackgroundTask(rebuild_soon, state))


@post(
    "/s/{code:str}/inspections",
    opt={"access": "staff"},
    tags=["pages"],
    include_in_schema=False,
    request_max_body_size=UPLOAD_LIMIT,
)
async def page_file_inspection(
    request: Request[Any, Any, Any],
    state: State,
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    code: FromPath[str],
) -> Response[Any]:
    return await page_write(request, state, code, "inspection", _file(request, conn, principal, code))


@post(
    "/api/v1/inspect/submissions/{id:str}",
    opt={"access": "staff"},
    tags=["inspect"],
    status_code=200,
    operation_class=body_of(records.Review),
)
async def api_review(
    request: Request[Any, Any, Any],
    state: State,
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    id: FromPath[str],
) -> Response[records.Reviewed]:
    """Verify or reject what a merchant submitted (`{"decision": "verify"}` or
    `{"decision": "reject", "note": "..."}`); only staff whose area covers the shop."""
    await records.submission_for_staff(conn, principal, id)
    body, _ = await forms.read(request, records.Review)
    result = await records.review_submission(conn, principal, id, body, access.request_id_of(request))
    return Response(result, background=BackgroundTask(rebuild_soon, state))


@post("/s/{code:str}/submissions/{id:str}", opt={"access": "staff"}, tags=["pages"], include_in_schema=False)
async def page_review(
    request: Request[Any, Any, Any],
    state: State,
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    code: FromPath[str],
    id: FromPath[str],
) -> Response[Any]:
    await records.submission_for_staff(conn, principal, id)

    async def write() -> None:
        body, _ = await forms.read(request, records.Review)
        await records.review_submission(conn, principal, id, body, access.request_id_of(request))

    return await page_write(request, state, code, "review", write())


class PendingItem(msgspec.Struct, frozen=True):
    id: str
    kind: str
    summary: str | None
    submitted_at: Any
    shop_code: str
    shop_name: str


@get("/api/v1/inspect/submissions", opt={"access": "staff"}, tags=["inspect"])
async def api_pending(
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    limit: PageSize = 50,
) -> list[PendingItem]:
    """Submissions in the caller's area awaiting verification, oldest first."""
    prefix = None if principal.role == "admin" else principal.area_path
    return await db.fetch_all(
        db.queries.list_pending_submissions(conn, prefix=prefix, limit=limit), PendingItem
    )


class DueShop(msgspec.Struct, frozen=True):
    code: str
    name: str
    address: str
    risk_score: int
    risk_reasons: list[dict[str, Any]]
    grade: str | None
    distance_m: int | None


@get("/api/v1/inspect/due", opt={"access": "staff"}, tags=["inspect"])
async def api_due(
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    limit: PageSize = 30,
    lat: Annotated[float | None, QueryParameter(ge=-90, le=90)] = None,
    lon: Annotated[float | None, QueryParameter(ge=-180, le=180)] = None,
) -> list[DueShop]:
    """The due list of the caller's area: riskiest first, with the reasons; with the phone's
    position (`lat`, `lon`), the nearest first within each band of 20 risk points."""
    if (lat is None) != (lon is None):
        raise InvalidInput("lon" if lon is None else "lat", "send both lat and lon, or neither")
    check_coordinates(lat=lat, lon=lon)
    prefix = None if principal.role == "admin" else principal.area_path
    rows = db.queries.list_due_shops(conn, prefix=prefix, limit=limit, lat=lat, lon=lon)
    return await db.fetch_all(rows, DueShop)
