"""Policy pushes: managers write and follow policies (API and pages); merchants read their inbox.

Managers and admins only see and target policies inside their own area; a merchant only ever sees
what was delivered to their own shops (anything else: 404).
"""

from __future__ import annotations

import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import asyncpg
import msgspec
from litestar import Request, Response, get, post, put
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_201_CREATED

from merchant_code import access, auth, db, forms, policies
from merchant_code.errors import DomainError, InvalidInput
from merchant_code.routes.auth import english
from merchant_code.routes.params import PageSize, PublicBefore

Lang = FromQuery[Literal["zh", "en"] | None]
# `scope` is a reserved name for handler arguments; the query parameter keeps it
Scope = Annotated[
    Literal["trade", "shop"] | None,
    QueryParameter(
        name="scope", description="trade: what went to a whole trade; shop: what concerns one shop"
    ),
]
Days = Annotated[int, QueryParameter(ge=0, le=365, description="days since delivery")]


def _tz(state: State) -> str:
    tz: str = state.settings.timezone
    return tz


# --- manager API -------------------------------------------------------------------------------


@get("/api/v1/manage/policies", opt={"access": "manager"}, tags=["policies"])
async def api_list_policies(
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    limit: PageSize = 50,
) -> list[policies.PolicyListItem]:
    """Policies inside the caller's area, newest first, with how many shops each reached and read."""
    return await policies.list_for(conn, principal, limit)


@post("/api/v1/manage/policies", opt={"access": "manager"}, tags=["policies"], status_code=HTTP_201_CREATED)
async def api_create_policy(
    request: Request[Any, Any, Any],
    state: State,
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    data: JSONBody[policies.PolicyIn],
) -> policies.PolicyView:
    """Schedule a policy: now (no `send_at`, no `cron`), at `send_at`, or on a `cron` recurrence
    (five fields, in the regulator's time zone). Target areas must lie in the caller's area."""
    public_id = await policies.create(
        conn, principal, data, tz=_tz(state), request_id=access.request_id_of(request)
    )
    return await policies.view(conn, await policies.policy_for(conn, principal, public_id))


@post("/api/v1/manage/audience", opt={"access": "manager"}, tags=["policies"], status_code=200)
async def api_audience(
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    state: State,
    data: JSONBody[policies.AudienceIn],
) -> policies.Audience:
    """How many shops a policy with these targets would reach today (the same rule that sends it)."""
    return await policies.audience(conn, principal, data, _today(state))


@get("/api/v1/manage/policies/{policy_id:str}", opt={"access": "manager"}, tags=["policies"])
async def api_get_policy(
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    policy_id: FromPath[str],
) -> policies.PolicyView:
    """One policy with its reach: targeted, delivered, read, delivered through channels, failed."""
    return await policies.view(conn, await policies.policy_for(conn, principal, policy_id))


@put("/api/v1/manage/policies/{policy_id:str}", opt={"access": "manager"}, tags=["policies"])
async def api_edit_policy(
    request: Request[Any, Any, Any],
    state: State,
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    policy_id: FromPath[str],
    data: JSONBody[policies.PolicyIn],
) -> policies.PolicyView:
    """Replace a policy that has not gone out yet (409 once it has: send a correction)."""
    await policies.edit(
        conn, principal, policy_id, data, tz=_tz(state), request_id=access.request_id_of(request)
    )
    return await policies.view(conn, await policies.policy_for(conn, principal, policy_id))


@post(
    "/api/v1/manage/policies/{policy_id:str}/cancel",
    opt={"access": "manager"},
    tags=["policies"],
    status_code=200,
)
async def api_cancel_policy(
    request: Request[Any, Any, Any],
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    policy_id: FromPath[str],
) -> policies.PolicyView:
    """Cancel before it goes out (a recurring policy: before its next occurrence)."""
    await policies.cancel(conn, principal, policy_id, access.request_id_of(request))
    return await policies.view(conn, await policies.policy_for(conn, principal, policy_id))


@post(
    "/api/v1/manage/policies/{policy_id:str}/corrections",
    opt={"access": "manager"},
    tags=["policies"],
    status_code=HTTP_201_CREATED,
)
async def api_correct_policy(
    request: Request[Any, Any, Any],
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    policy_id: FromPath[str],
    data: JSONBody[policies.CorrectionIn],
) -> policies.PolicyView:
    """After a policy went out: a correction notice to every shop it reached, sent now."""
    created = await policies.correct(conn, principal, policy_id, data, access.request_id_of(request))
    return await policies.view(conn, await policies.policy_for(conn, principal, created))


@get(
    "/api/v1/manage/policies/{policy_id:str}/unread.csv",
    opt={"access": "manager"},
    tags=["policies"],
    media_type="text/csv",
)
async def api_unread_csv(
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    policy_id: FromPath[str],
    days: Days = 7,
) -> Response[str]:
    """The shops that have not read the policy `days` days after delivery, by area (CSV), for a
    grid worker to follow up in person."""
    row = await policies.policy_for(conn, principal, policy_id)
    body = await policies.unread_csv(conn, row["id"], days)
    return Response(
        "\ufeff" + body,  # a BOM so that spreadsheet programs read the Chinese names as UTF-8
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="unread-{policy_id}-{days}d.csv"'},
    )


def _today(state: State) -> datetime.date:
    return datetime.datetime.now(ZoneInfo(_tz(state))).date()


# --- merchant inbox ----------------------------------------------------------------------------


@get("/api/v1/merchant/inbox", opt={"access": "merchant"}, tags=["merchant"])
async def api_inbox(
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    show: Scope = None,
    unread: FromQuery[bool] = False,
    limit: PageSize = 50,
    before: PublicBefore = None,
    lang: Lang = None,
) -> policies.Inbox:
    """What was delivered to the caller's shops, newest first, with the unread count. `scope`:
    `trade` for what went to a whole trade, `shop` for what concerns one shop (reminders, policies
    narrowed by a filter). `before`: the `next` of the previous page."""
    return await policies.inbox(
        conn, principal, scope=show, unread_only=unread, limit=limit, before=before, en=lang == "en"
    )


@get("/api/v1/merchant/inbox/{item_id:str}", opt={"access": "merchant"}, tags=["merchant"])
async def api_inbox_item(
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    item_id: FromPath[str],
    lang: Lang = None,
) -> policies.InboxItem:
    """Open one message; the first opening is recorded as the read receipt."""
    return await policies.read_item(conn, principal, item_id, en=lang == "en")


@get("/inbox", opt={"access": "merchant"}, tags=["pages"], include_in_schema=False)
async def inbox_page(
    request: Request[Any, Any, Any],
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    show: Scope = None,
    unread: FromQuery[bool] = False,
    before: PublicBefore = None,
    lang: Lang = None,
) -> Template:
    en = english(request, lang)
    box = await policies.inbox(conn, principal, scope=show, unread_only=unread, before=before, en=en)
    context = {"en": en, "box": box, "scope": show, "unread": unread}
    return Template("inbox.html.j2", context=context)


@get("/inbox/{item_id:str}", opt={"access": "merchant"}, tags=["pages"], include_in_schema=False)
async def inbox_item_page(
    request: Request[Any, Any, Any],
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    item_id: FromPath[str],
    lang: Lang = None,
) -> Template:
    en = english(request, lang)
    item = await policies.read_item(conn, principal, item_id, en=en)
    return Template("inbox_item.html.j2", context={"en": en, "item": item})


# --- manager pages -----------------------------------------------------------------------------


class PolicyForm(msgspec.Struct, frozen=True):
    """The page's form, flat as a browser sends it."""

    title: str = ""
    body_md: str = ""
    area_codes: list[str] = []
    trades: list[str] = []
    grades: list[str] = []
    licence_expires_within_days: int | None = None
    send: Literal["now", "at", "cron"] = "now"
    send_at: str | None = None  # datetime-local: in the regulator's time zone
    cron: str | None = None
    action: Literal["preview", "send"] = "send"


def _policy_in(form: PolicyForm, tz: str) -> policies.PolicyIn:
    send_at = None
    if form.send == "at":
        try:
            send_at = datetime.datetime.fromisoformat(form.send_at or "").replace(tzinfo=ZoneInfo(tz))
        except ValueError:
            raise InvalidInput("send_at", "give the date and time to send at") from None
    if form.send == "cron" and not form.cron:
        raise InvalidInput("cron", "give the recurrence")
    filters: dict[str, Any] = {}
    if form.grades:
        filters["grades"] = form.grades
    if form.licence_expires_within_days:
        filters["licence_expires_within_days"] = form.licence_expires_within_days
    raw = {
        "title": form.title,
        "body_md": form.body_md,
        "area_codes": form.area_codes,
        "trades": form.trades,
        "filters": filters,
        "send_at": send_at,
        "cron": form.cron if form.send == "cron" else None,
    }
    try:
        return msgspec.convert(raw, policies.PolicyIn, strict=False)
    except msgspec.ValidationError as exc:
        raise InvalidInput(forms.field_of(str(exc)), str(exc)) from None


async def _manage_context(conn: asyncpg.Connection, principal: auth.Principal, en: bool) -> dict[str, Any]:
    prefix = None if principal.role == "admin" else principal.area_path
    return {
        "en": en,
        "items": await policies.list_for(conn, principal, 50),
        "areas": [dict(r) async for r in db.queries.list_areas_in_scope(conn, prefix=prefix)],
        "trades": [dict(r) async for r in db.queries.list_trades(conn)],
        "form": PolicyForm(),
        "error": None,
        "audience": None,
    }


@get("/manage/policies", opt={"access": "manager"}, tags=["pages"], include_in_schema=False)
async def manage_page(
    request: Request[Any, Any, Any],
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    lang: Lang = None,
) -> Template:
    """The policies of the manager's area and a form for a new one (with an audience preview)."""
    return Template(
        "policies.html.j2", context=await _manage_context(conn, principal, english(request, lang))
    )


@post("/manage/policies", opt={"access": "manager"}, tags=["pages"], include_in_schema=False)
async def manage_submit(
    request: Request[Any, Any, Any],
    state: State,
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    lang: Lang = None,
) -> Response[Any]:
    en = english(request, lang)
    context = await _manage_context(conn, principal, en)
    form = PolicyForm()
    try:
        form, _ = await forms.read(request, PolicyForm, lists=("area_codes", "trades", "grades"))
        data = _policy_in(form, _tz(state))
        if form.action == "preview":
            audience = await policies.audience(conn, principal, data, _today(state))
            return Template("policies.html.j2", context={**context, "form": form, "audience": audience.shops})
        public_id = await policies.create(
            conn, principal, data, tz=_tz(state), request_id=access.request_id_of(request)
        )
    except DomainError as exc:
        error = {"field": getattr(exc, "field", "body"), "detail": exc.detail}
        return Template(
            "policies.html.j2", context={**context, "form": form, "error": error}, status_code=exc.status
        )
    return Redirect(path=f"/manage/policies/{public_id}{'?lang=en' if en else ''}", status_code=303)


@get("/manage/policies/{policy_id:str}", opt={"access": "manager"}, tags=["pages"], include_in_schema=False)
async def manage_policy_page(
    request: Request[Any, Any, Any],
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    policy_id: FromPath[str],
    days: Days = 7,
    error: FromQuery[str | None] = None,
    lang: Lang = None,
) -> Template:
    """One policy: its text as merchants see it, its reach, and who has not read it after `days`
    days, by area."""
    row = await policies.policy_for(conn, principal, policy_id)
    unread = [dict(r) async for r in db.queries.list_unread_after(conn, policy_id=row["id"], days=days)]
    context = {
        "en": english(request, lang),
        "p": await policies.view(conn, row),
        "body_html": policies.render_markdown(row["body_md"]),
        "unread": unread[:500],
        "unread_total": len(unread),
        "days": days,
        "error": error,
    }
    return Template("policy.html.j2", context=context)


async def _page_action(request: Request[Any, Any, Any], policy_id: str, action: Any) -> Response[Any]:
    en = "?lang=en" if request.query_params.get("lang") == "en" else ""
    try:
        target = await action
    except DomainError as exc:
        if exc.status == 404:
            raise
        sep = "&" if en else "?"
        return Redirect(path=f"/manage/policies/{policy_id}{en}{sep}error={exc.slug}", status_code=303)
    return Redirect(path=f"/manage/policies/{target or policy_id}{en}", status_code=303)


@post(
    "/manage/policies/{policy_id:str}/cancel",
    opt={"access": "manager"},
    tags=["pages"],
    include_in_schema=False,
)
async def manage_cancel(
    request: Request[Any, Any, Any],
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    policy_id: FromPath[str],
) -> Response[Any]:
    return await _page_action(
        request, policy_id, policies.cancel(conn, principal, policy_id, access.request_id_of(request))
    )


@post(
    "/manage/policies/{policy_id:str}/corrections",
    opt={"access": "manager"},
    tags=["pages"],
    include_in_schema=False,
)
async def manage_correct(
    request: Request[Any, Any, Any],
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    policy_id: FromPath[str],
) -> Response[Any]:
    async def correct() -> str:
        data, _ = await forms.read(request, policies.CorrectionIn)
        return await policies.correct(conn, principal, policy_id, data, access.request_id_of(request))

    return await _page_action(request, policy_id, correct())
