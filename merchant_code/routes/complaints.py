"""A citizen's complaint from the scan page: category, text, an optional photo and contact
(anonymous by default), limited per client address; it becomes a case for the shop and the
citizen gets a tracking number."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import asyncpg
import msgspec
from litestar import Request, Response, get, post
from litestar.background_tasks import BackgroundTask
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_201_CREATED

from merchant_code import access, auth, cases, forms, records, uploads
from merchant_code.bodies import body_of
from merchant_code.errors import DomainError, NotFound
from merchant_code.routes.auth import english
from merchant_code.routes.records import rebuild_soon

# complaints one client address may file an hour (one person rarely has more to report)
PER_HOUR = 5


async def _file(
    request: Request[Any, Any, Any], state: State, conn: asyncpg.Connection, code: str
) -> cases.Opened:
    shop = await records.shop_for_anyone(conn, code)
    body, photo = await forms.read(request, records.Complaint, file_field="photo")
    client = access.client_of(request)
    keys = [(f"complaint:{client}", 1)]  # counted even if the request fails later
    await auth.throttle(state.side_pool, keys, PER_HOUR, 60, state.settings.acquire_seconds)
    return await records.file_complaint(conn, shop, body, photo, access.request_id_of(request))


@post(
    "/api/v1/shops/{code:str}/complaints",
    opt={"access": "public"},
    tags=["complaints"],
    status_code=HTTP_201_CREATED,
    request_max_body_size=uploads.MAX_REQUEST_BYTES,
    operation_class=body_of(records.Complaint, file_field="photo"),
)
async def api_complaint(
    request: Request[Any, Any, Any],
    state: State,
    conn: NamedDependency[asyncpg.Connection],
    code: FromPath[str],
) -> Response[records.Tracking]:
    """File a complaint about a shop (JSON, or multipart/form-data with an optional `photo`):
    `category` (food_safety, hygiene, price, service, licence, other), `text`, and optionally
    `name`, `phone`, `email`. At most five an hour from one address (then 429)."""
    opened = await _file(request, state, conn, code)
    number = opened.tracking_number
    tracking = records.Tracking(
        tracking_number=number,
        track_url=f"{state.settings.base_url}/track/{number}",
        joined=opened.joined,
        request_id=opened.request_id,
    )
    return Response(tracking, status_code=201, background=BackgroundTask(rebuild_soon, state))


@get("/s/{code:str}/complaint", opt={"access": "public"}, tags=["pages"], include_in_schema=False)
async def complaint_page(
    request: Request[Any, Any, Any],
    conn: NamedDependency[asyncpg.Connection],
    code: FromPath[str],
    lang: FromQuery[Literal["zh", "en"] | None] = None,
) -> Template:
    shop = await records.shop_for_anyone(conn, code)
    name = await conn.fetchval("SELECT name FROM shop WHERE id = $1", shop.id)
    context = {"en": english(request, lang), "code": shop.code, "name": name, "error": None, "form": {}}
    return Template("complaint.html.j2", context=context)


@post(
    "/s/{code:str}/complaint",
    opt={"access": "public"},
    tags=["pages"],
    include_in_schema=False,
    request_max_body_size=uploads.MAX_REQUEST_BYTES,
)
async def complaint_submit(
    request: Request[Any, Any, Any],
    state: State,
    conn: NamedDependency[asyncpg.Connection],
    code: FromPath[str],
    lang: FromQuery[Literal["zh", "en"] | None] = None,
) -> Response[Any]:
    en = english(request, lang)
    try:
        opened = await _file(request, state, conn, code)
    except DomainError as exc:
        if isinstance(exc, NotFound):
            raise
        shop = await records.shop_for_anyone(conn, code)
        name = await conn.fetchval("SELECT name FROM shop WHERE id = $1", shop.id)
        context = {
            "en": en,
            "code": shop.code,
            "name": name,
            "error": exc.status,
            "field": getattr(exc, "field", None),
        }
        return Template("complaint.html.j2", context={**context, "form": {}}, status_code=exc.status)
    context = {"en": en, "number": opened.tracking_number, "joined": opened.joined, "code": code.upper()}
    return Template(
        "complaint_filed.html.j2",
        context=context,
        status_code=201,
        background=BackgroundTask(rebuild_soon, state),
    )


@get("/track/{number:str}", opt={"access": "public"}, tags=["complaints"])
async def track(
    request: Request[Any, Any, Any],
    conn: NamedDependency[asyncpg.Connection],
    number: FromPath[str],
    lang: FromQuery[Literal["zh", "en"] | None] = None,
    reopened: FromQuery[bool] = False,
    error: FromQuery[str | None] = None,
) -> Response[Any]:
    """A complaint's progress by its tracking number: status, dates and the notes staff made
    public; never who handles it or who else reported. JSON for `Accept: application/json`, a
    page otherwise."""
    case = await cases.tracking(conn, number)
    if "application/json" in request.headers.get("accept", ""):
        return Response(case)
    context = {"en": english(request, lang), "case": case, "reopened": reopened, "error": error}
    return Template("track.html.j2", context=context)


class ReopenForm(msgspec.Struct, frozen=True):
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]


@post(
    "/track/{number:str}/reopen",
    opt={"access": "public"},
    tags=["complaints"],
    status_code=200,
    operation_class=body_of(ReopenForm, form="application/x-www-form-urlencoded"),
)
async def track_reopen(
    request: Request[Any, Any, Any],
    state: State,
    conn: NamedDependency[asyncpg.Connection],
    number: FromPath[str],
    lang: FromQuery[Literal["zh", "en"] | None] = None,
) -> Response[Any]:
    """The reporter reopens a resolved case within the reopen window, saying why (JSON or a
    form; a form is answered by a redirect back to the tracking page)."""
    client = access.client_of(request)
    # tracking numbers are not to be guessed here
    await auth.throttle(state.side_pool, [(f"reopen:{client}", 1)], 20, 60, state.settings.acquire_seconds)
    page = "json" not in request.headers.get("content-type", "")
    back = f"/track/{number.strip().upper()}" + ("?lang=en&" if lang == "en" else "?")
    try:
        body, _ = await forms.read(request, ReopenForm)
        status = await cases.reopen_by_reporter(conn, number, body.reason)
    except DomainError as exc:
        if not page or isinstance(exc, NotFound):
            raise
        return Redirect(path=f"{back}error={exc.slug}", status_code=303)
    if page:
        return Redirect(path=f"{back}reopened=true", status_code=303)
    return Response({"status": status})
