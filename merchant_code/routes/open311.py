"""Open311 GeoReport v2 (http://wiki.open311.org/GeoReport_v2), in XML and JSON: the public
complaint categories as services, and complaints as service requests, for apps that speak the
standard. Every document in both formats by its extension (`services.xml`, `services.json`,
`requests/{id}.xml`...; open311_format.py writes them), errors included.

- Reading is public. Filing (`POST requests.{xml,json}`) needs an `api_key` the regulator issued
  (`merchant-code open311 key create NAME`; only its sha256 is kept), and each key may file at
  most `PER_HOUR` requests an hour.
- `jurisdiction_id` may be left out (one jurisdiction is served); given, it must be the configured
  one (`MERCHANT_CODE_OPEN311_JURISDICTION`, by default the host of the public URL without www.,
  as the spec suggests; discovery names it), else a 404 as the spec's error lists say.
- A request is located by `address_id` (the shop's code on its sticker), by an `address_string`
  that names one shop (its name, its address, or both), or by `lat` and `long`: the nearest shop
  that is not closed within `NEAR_METRES`. The address_string is kept as given, for staff, with
  the reporter's text (`description`, which is optional). A request opens a complaint case, or
  joins the open case about the same shop and category (the answer's `service_notice` says so); a
  new request is answered 201 (the spec's examples show 200).
- A service request is a complaint case (source `complaint`) or a report that joined one; its
  `service_request_id` is that report's own public id (`SR-`), never the reporter's tracking
  number nor the case's number: requests are listed to everyone, while a tracking number opens the
  reporter's page and its reopen, so it is only in the `service_notice` answering the client that
  filed the request. Its status is the case's (open, assigned, in_progress: `open`; resolved,
  closed: `closed`). Every service is `realtime`: the id is answered at once, never a token; a
  client that asks `tokens/{token}` anyway with that id is answered it (the token is the id).
- What is published: the category, the department (never a person), the dates, the shop's public
  name, address and coordinates, and the latest note staff made public. Never the reporter's
  contact, nor the reporter's own text (it may name people or carry a phone number, and Open311
  publishes `description` to everyone): `description` says which kind of complaint it is.
  `media_url` is neither fetched nor kept, nor are `attribute[...]`, `device_id`, `account_id`.
- Errors are Open311's `[{"code": STATUS, "description": "..."}]` (`<errors><error>` in XML) with
  that HTTP status, Litestar's own errors included (400 for a bad or missing parameter, naming it;
  403 for a bad key; 404).
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import re
import secrets
from typing import Annotated, Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import asyncpg
import msgspec
from litestar import Request, Response, get, post, route
from litestar.background_tasks import BackgroundTask
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery
from litestar.types import ExceptionHandlersMap

from merchant_code import access, audit, auth, cases, db
from merchant_code.bodies import body_of
from merchant_code.errors import (
    UNSTORABLE_TEXT,
    DomainError,
    Forbidden,
    InvalidInput,
    NotFound,
    Unauthorized,
    unstorable_text,
)
from merchant_code.routes.auth import english
from merchant_code.routes.open311_format import (
    MEDIA_TYPES,
    Format,
    InBothFormats,
    format_of,
    respond,
    split_format,
)
from merchant_code.routes.open311_place import address_text, locate
from merchant_code.routes.records import rebuild_soon
from merchant_code.settings import Settings

log = logging.getLogger("merchant_code")

PREFIX = "/open311/v2"
SPECIFICATION = "http://wiki.open311.org/GeoReport_v2"
CHANGESET = "2026-11-27T00:00:00+08:00"  # when this document (the offer below) last changed
PER_HOUR = 600  # requests one API key may file an hour
WINDOW = datetime.timedelta(days=90)  # the spec's longest start_date..end_date span, and the default
MAX_RESULTS = 1000
DESCRIPTION_MAX = 2000
NAME_MAX = 40
PHONE = re.compile(r"^[0-9+() -]{5,30}$")
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,190}$")
PUBLIC = {"access": "public"}
CLOSED_STATES = ("resolved", "closed")


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def new_key() -> str:
    """256 random bits, URL-safe: shown once to whoever creates it."""
    return secrets.token_urlsafe(32)


# ------------------------------------------------------------------------------------ errors


class Open311Error(msgspec.Struct, frozen=True):
    code: int
    description: str


def error_response(request: Request[Any, Any, Any], status: int, description: str) -> Response[Any]:
    """Open311's error list, in the format the path asked for."""
    return respond(format_of(request), "errors", [Open311Error(code=status, description=description)], status)


def _domain(request: Request[Any, Any, Any], exc: DomainError) -> Response[Any]:
    if isinstance(exc, InvalidInput):  # every bad parameter is a 400 here, naming the parameter
        response = error_response(request, 400, f"{exc.field}: {exc.detail}")
    else:
        response = error_response(request, exc.status, exc.detail)
    if "retry_after" in exc.extra:
        response.headers["Retry-After"] = str(exc.extra["retry_after"])
    return response


def _validation(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    parts = [
        f"{item.get('key') or 'body'}: {item.get('message')}"
        for item in (exc.extra if isinstance(exc.extra, list) else [])
        if isinstance(item, dict)
    ]
    return error_response(request, 400, "; ".join(parts) or str(exc.detail))


def _http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if exc.status_code >= 500:
        return _unexpected(request, exc)
    response = error_response(request, exc.status_code, str(exc.detail))
    if exc.headers:
        response.headers.update(exc.headers)
    return response


def _unstorable(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    return _domain(request, unstorable_text(request))


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(request, 500, "something went wrong on our side; it has been logged")


# what the OpenAPI document says a 400 and a 404 are on these routes (not Litestar's default
# error shape); every operation takes jurisdiction_id, and another jurisdiction's is a 404
BAD_REQUEST = {
    400: ResponseSpec(
        data_container=list[Open311Error],
        generate_examples=False,
        description="A bad or missing parameter, named in the description (Open311's error list)",
    ),
    404: ResponseSpec(
        data_container=list[Open311Error],
        generate_examples=False,
        description="No such service or request, or a jurisdiction_id this endpoint does not serve"
        " (Open311's error list)",
    ),
}

# filing a request needs the regulator's api_key: missing, unknown or disabled is a 403
FILING = {
    **BAD_REQUEST,
    403: ResponseSpec(
        data_container=list[Open311Error],
        generate_examples=False,
        description="No api_key, or one that is unknown or disabled (Open311's error list)",
    ),
}

# every class the app maps (errors.problem_handlers, access.login_redirect) is mapped again here,
# so that the nearest handler of any error on these routes is an Open311 one
ERRORS: ExceptionHandlersMap = {
    DomainError: _domain,
    Unauthorized: _domain,
    ValidationException: _validation,
    HTTPException: _http,
    **dict.fromkeys(UNSTORABLE_TEXT, _unstorable),
    Exception: _unexpected,
}


def jurisdiction(settings: Settings) -> str:
    """The jurisdiction_id served: the setting, else the public URL's host without www. (the spec
    suggests the jurisdiction's website root)."""
    if settings.open311_jurisdiction:
        return settings.open311_jurisdiction.lower()
    host = urlsplit(settings.base_url).hostname or "localhost"
    return host.removeprefix("www.")


def check_jurisdiction(settings: Settings, given: str | None) -> None:
    """Absent is this one (one jurisdiction is served); another is a 400 naming the parameter, as
    for any other bad parameter (the spec lists 404 for it; a client that gave a wrong
    jurisdiction made a bad request, and a 404 would read as "no such request or service")."""
    if given is None or not given.strip():
        return
    served = jurisdiction(settings)
    if given.strip().lower() != served:
        raise InvalidInput("jurisdiction_id", f"{given.strip()[:100]!r} is not served here, only {served!r}")


# ---------------------------------------------------------------------------------- documents


class Endpoint(msgspec.Struct, frozen=True):
    specification: str
    url: str
    changeset: str
    type: str
    formats: list[str]


class Discovery(msgspec.Struct, frozen=True):
    changeset: str
    contact: str
    key_service: str
    endpoints: list[Endpoint]


class Service(msgspec.Struct, frozen=True):
    service_code: str
    service_name: str
    description: str
    metadata: bool
    type: str
    keywords: str
    group: str


class AttributeValue(msgspec.Struct, frozen=True):
    key: str
    name: str


class ServiceAttribute(msgspec.Struct, frozen=True):
    """The spec's attribute (none is offered today: every service's `metadata` is false)."""

    variable: bool
    code: str
    datatype: str
    required: bool
    datatype_description: str | None
    order: int
    description: str
    values: list[AttributeValue]


class ServiceDefinition(msgspec.Struct, frozen=True):
    service_code: str
    attributes: list[ServiceAttribute]


class Submitted(msgspec.Struct, frozen=True):
    service_request_id: str
    service_notice: str
    account_id: str | None = None


class ServiceRequest(msgspec.Struct, frozen=True):
    """One request as everyone may see it (Open311 publishes all of it)."""

    service_request_id: str
    status: str
    status_notes: str | None
    service_name: str | None
    service_code: str
    description: str
    agency_responsible: str | None
    service_notice: str | None
    requested_datetime: str
    updated_datetime: str
    expected_datetime: str | None
    address: str | None
    address_id: str | None
    zipcode: str | None
    lat: float | None
    long: float | None
    media_url: str | None


def _tz(state: State) -> ZoneInfo:
    return ZoneInfo(state.settings.timezone)


def _when(value: datetime.datetime | None, tz: ZoneInfo) -> str | None:
    """W3C / ISO 8601 with the regulator's offset, to the second (as the spec's examples)."""
    return None if value is None else value.astimezone(tz).replace(microsecond=0).isoformat()


def _joined_notice(en: bool) -> str:
    if en:
        return "this report joined an open request about the same problem at this shop and is handled with it"
    return "此反映已并入同一商户同一问题的在办请求，一并处理"


def _item(row: asyncpg.Record, en: bool, tz: ZoneInfo) -> ServiceRequest:
    kind = (row["category_name_en"] if en else row["category_name"]) or row["category"]
    shop = (row["shop_name_en"] or row["shop_name"]) if en else row["shop_name"]
    requested = _when(row["requested_at"], tz)
    updated = _when(row["updated_at"], tz)
    assert requested is not None and updated is not None
    return ServiceRequest(
        service_request_id=row["service_request_id"],
        status="closed" if row["status"] in CLOSED_STATES else "open",
        status_notes=row["status_notes"],
        service_name=kind,
        service_code=row["category"],
        # the reporter's own words stay with staff: they may carry names or phone numbers
        description=f"{kind} complaint (the reporter's text is not published)"
        if en
        else f"{kind}投诉（投诉原文不公开）",
        agency_responsible=row["department_name_en"] if en else row["department_name"],
        service_notice=_joined_notice(en) if row["joined"] else None,
        requested_datetime=requested,
        updated_datetime=updated,
        expected_datetime=_when(row["sla_due_at"], tz),
        address=None if row["shop_name"] is None else f"{shop}, {row['shop_address']}",
        address_id=row["shop_code"],
        zipcode=None,
        lat=row["lat"],
        long=row["lon"],
        media_url=None,
    )


# ------------------------------------------------------------------------------------ services


def _discovery(settings: Settings) -> Discovery:
    base = settings.base_url
    how = "API keys are issued by the market regulator's administrators"
    return Discovery(
        changeset=CHANGESET,
        contact=f"{base} ({how}); jurisdiction_id: {jurisdiction(settings)}",
        key_service=f"{how} (merchant-code open311 key create NAME)",
        endpoints=[
            Endpoint(
                specification=SPECIFICATION,
                url=f"{base}{PREFIX}",
                changeset=CHANGESET,
                type="production",
                formats=MEDIA_TYPES,
            )
        ],
    )


@get(f"{PREFIX}/discovery.json", opt=PUBLIC, tags=["open311"], exception_handlers=ERRORS)
async def discovery(state: State) -> Response[Discovery]:
    """Open311 service discovery: where the GeoReport v2 endpoint is, what it speaks (XML and
    JSON, each document by its extension) and the jurisdiction_id it serves; `discovery.xml` too."""
    return respond("json", "discovery", _discovery(state.settings))


@get(f"{PREFIX}/discovery.xml", opt=PUBLIC, include_in_schema=False, exception_handlers=ERRORS)
async def discovery_xml(state: State) -> Response[bytes]:
    return respond("xml", "discovery", _discovery(state.settings))


async def _services(
    request: Request[Any, Any, Any], conn: asyncpg.Connection, lang: str | None, jurisdiction_id: str | None
) -> list[Service]:
    check_jurisdiction(request.app.state.settings, jurisdiction_id)
    en = english(request, lang)
    return [
        Service(
            service_code=r["code"],
            service_name=r["name_en"] if en else r["name"],
            description=f"Complaint about a shop: {r['name_en'].lower()}" if en else f"投诉商户：{r['name']}",
            metadata=False,
            type="realtime",
            keywords=",".join((r["code"], r["name"], r["name_en"])),
            group="Complaints" if en else "投诉",
        )
        async for r in db.queries.list_categories(conn, public_only=True)
    ]


@get(
    f"{PREFIX}/services.json",
    opt=PUBLIC,
    tags=["open311"],
    exception_handlers=ERRORS,
    responses=BAD_REQUEST,
)
async def services(
    request: Request[Any, Any, Any],
    conn: NamedDependency[asyncpg.Connection],
    lang: FromQuery[str | None] = None,
    jurisdiction_id: FromQuery[str | None] = None,
) -> Response[list[Service]]:
    """The complaint categories citizens may use, as Open311 services (names in Chinese; `lang=en`
    or `Accept-Language: en` for English); `services.xml` in XML."""
    return respond("json", "services", await _services(request, conn, lang, jurisdiction_id))


@get(f"{PREFIX}/services.xml", opt=PUBLIC, include_in_schema=False, exception_handlers=ERRORS)
async def services_xml(
    request: Request[Any, Any, Any],
    conn: NamedDependency[asyncpg.Connection],
    lang: FromQuery[str | None] = None,
    jurisdiction_id: FromQuery[str | None] = None,
) -> Response[bytes]:
    return respond("xml", "services", await _services(request, conn, lang, jurisdiction_id))


@get(
    f"{PREFIX}/services/{{service_file:str}}",
    opt=PUBLIC,
    tags=["open311"],
    exception_handlers=ERRORS,
    responses=BAD_REQUEST,
    operation_class=InBothFormats,
)
async def service_definition(
    state: State,
    conn: NamedDependency[asyncpg.Connection],
    service_file: FromPath[str],
    jurisdiction_id: FromQuery[str | None] = None,
) -> Response[ServiceDefinition]:
    """`services/{service_code}.xml` or `.json`: no service has extra attributes (`metadata` is
    false for all), so the definition is the empty list; an unknown code is a 404."""
    code, fmt = split_format(service_file)
    check_jurisdiction(state.settings, jurisdiction_id)
    row = await db.queries.get_category(conn, code=code)
    if row is None or not row["public"]:
        raise NotFound(f"no service has the code {code!r}")
    return respond(fmt, "service_definition", ServiceDefinition(service_code=row["code"], attributes=[]))


# ------------------------------------------------------------------------------------ requests


async def _fields(request: Request[Any, Any, Any]) -> dict[str, str]:
    """The POST's arguments, form-encoded as the spec says (or JSON), as trimmed strings; an empty
    value is an absent one."""
    fields: dict[str, str] = {}
    if "json" in request.headers.get("content-type", ""):
        raw = await request.json()  # decoding.JSONRequest: anything unreadable is InvalidInput
        if not isinstance(raw, dict):
            raise InvalidInput("body", "send a JSON object")
        for key, value in raw.items():
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise InvalidInput(str(key), "give a string or a number")
            fields[str(key)] = str(value).strip()
    else:
        form = await request.form()
        for key in form:
            texts = [v for v in form.getall(key) if isinstance(v, str)]
            if texts:
                fields[key] = texts[0].strip()
    return {k: v for k, v in fields.items() if v}


async def _api_client(conn: asyncpg.Connection, fields: dict[str, str]) -> asyncpg.Record:
    key = fields.get("api_key")
    if key is None:
        raise Forbidden("api_key is required to file a request: the regulator issues them")
    row: asyncpg.Record | None = await db.queries.get_open311_key(conn, key_hash=hash_key(key))
    if row is None:
        raise Forbidden("this api_key is not valid, or it has been disabled")
    return row


def _reporter(fields: dict[str, str]) -> cases.Reporter:
    names = []
    for field in ("first_name", "last_name"):
        if field in fields:
            if len(fields[field]) > NAME_MAX:
                raise InvalidInput(field, f"at most {NAME_MAX} characters")
            names.append(fields[field])
    phone, email = fields.get("phone"), fields.get("email")
    if phone is not None and not PHONE.match(phone):
        raise InvalidInput("phone", "5 to 30 digits, spaces, +, - or brackets")
    if email is not None and not EMAIL.match(email):
        raise InvalidInput("email", "not an email address")
    return cases.Reporter(name=" ".join(names) or None, phone=phone, email=email)


class RequestForm(msgspec.Struct, frozen=True):
    """A new request's arguments, as the document describes them (`_fields` reads them)."""

    api_key: str
    service_code: str
    jurisdiction_id: str | None = None
    description: Annotated[str, msgspec.Meta(max_length=2000)] | None = None
    address_id: str | None = None
    lat: float | None = None
    long: float | None = None
    address_string: Annotated[str, msgspec.Meta(max_length=500)] | None = None
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    email: str | None = None
    media_url: str | None = None


async def _throttle(state: State, client: asyncpg.Record) -> None:
    try:  # counted even if the request fails later
        await auth.throttle(
            state.side_pool, [(f"open311:{client['id']}", 1)], PER_HOUR, 60, state.settings.acquire_seconds
        )
    except auth.TooManyAttempts as exc:
        raise auth.TooManyAttempts(
            f"this api_key has filed {PER_HOUR} requests in the last hour: try again later",
            retry_after=exc.extra.get("retry_after", 3600),
        ) from None


async def _category(conn: asyncpg.Connection, fields: dict[str, str]) -> asyncpg.Record:
    code = fields.get("service_code")
    if code is None:
        raise InvalidInput("service_code", "required: one of the codes services.xml lists")
    category: asyncpg.Record | None = await db.queries.get_category(conn, code=code)
    if category is None or not category["public"]:
        raise InvalidInput("service_code", f"no service has the code {code!r}: see services.xml")
    return category


def _staff_text(fields: dict[str, str]) -> str | None:
    """What staff keep of the report: the reporter's description (optional, as in the spec) and
    the place in their own words, as given."""
    description = fields.get("description")
    if description is not None and len(description) > DESCRIPTION_MAX:
        raise InvalidInput("description", f"at most {DESCRIPTION_MAX} characters")
    place = address_text(fields)
    parts = [description, None if place is None else f"地点（address_string）：{place}"]
    return "\n".join(p for p in parts if p) or None


def _notice(en: bool, joined: bool, track: str, fields: dict[str, str]) -> str:
    if en:
        notice = f"{_joined_notice(en)}; " if joined else "received; "
        notice += f"follow it at {track}"
        return notice + (" (media_url is not kept)" if "media_url" in fields else "")
    notice = f"{_joined_notice(en)}；" if joined else "已受理；"
    notice += f"可在 {track} 查看进度"
    return notice + ("（不保存 media_url）" if "media_url" in fields else "")


async def _file(
    request: Request[Any, Any, Any], state: State, conn: asyncpg.Connection, fields: dict[str, str]
) -> tuple[cases.Opened, asyncpg.Record]:
    """Open the complaint (or join the open one) the fields describe, with its audit event."""
    client = await _api_client(conn, fields)
    await _throttle(state, client)
    category = await _category(conn, fields)
    text = _staff_text(fields)
    where = await locate(conn, fields)
    reporter = _reporter(fields)
    async with conn.transaction():
        opened = await cases.open_case(
            conn,
            shop_id=where.shop_id,
            source="complaint",
            category=category["code"],
            description=text,
            reporter=reporter,
            via="open311",
            lat=where.lat,
            lon=where.lon,
        )
        # like a complaint from the page: the trail says one came and through which app, not from whom
        await audit.append(
            conn,
            actor=None,
            action="complaint.file",
            object_type="case",
            object_id=opened.case_number,  # the audit trail is staff's: never the reporter's number
            request_id=access.request_id_of(request),
            detail={
                "shop": where.shop_code,
                "located_by": where.by,
                "category": category["code"],
                "contact": reporter.phone is not None or reporter.email is not None,
                "joined": opened.joined,
                "via": "open311",
                "open311_key": client["name"],
            },
        )
    return opened, category


async def _create(
    request: Request[Any, Any, Any], state: State, conn: asyncpg.Connection, lang: str | None, fmt: Format
) -> Response[Any]:
    fields = await _fields(request)
    check_jurisdiction(state.settings, fields.get("jurisdiction_id"))
    opened, _ = await _file(request, state, conn, fields)
    track = f"{state.settings.base_url}/track/{opened.tracking_number}"
    notice = _notice(english(request, lang), opened.joined, track, fields)
    # the request's public id; the tracking number (the reporter's proof) is only in the notice
    answer = [Submitted(service_request_id=opened.request_id, service_notice=notice)]
    return respond(fmt, "service_requests", answer, 201, BackgroundTask(rebuild_soon, state))


@post(
    f"{PREFIX}/requests.json",
    opt=PUBLIC,
    tags=["open311"],
    status_code=201,
    exception_handlers=ERRORS,
    responses=FILING,
    operation_class=body_of(RequestForm, form="application/x-www-form-urlencoded"),
)
async def create_request(
    request: Request[Any, Any, Any],
    state: State,
    conn: NamedDependency[asyncpg.Connection],
    lang: FromQuery[str | None] = None,
) -> Response[list[Submitted]]:
    """File a complaint (form-encoded per the spec, or JSON; `requests.xml` answers in XML):
    `api_key`, `service_code`, a location (`address_id`: the shop's code; or `address_string`
    naming a shop by its name, its address or both; or `lat` and `long`: the nearest shop within
    50 metres), and optionally `jurisdiction_id`, `description` (up to 2000 characters),
    `first_name`, `last_name`, `phone`, `email` (seen by staff only). `media_url`, `device_id`,
    `account_id` and `attribute[...]` are not kept. 201 with the request's public id as
    `service_request_id` and the reporter's tracking page in `service_notice`; 403 for a bad key,
    404 for another jurisdiction, 429 past 600 requests an hour from one key."""
    return await _create(request, state, conn, lang, "json")


@post(
    f"{PREFIX}/requests.xml", opt=PUBLIC, include_in_schema=False, status_code=201, exception_handlers=ERRORS
)
async def create_request_xml(
    request: Request[Any, Any, Any],
    state: State,
    conn: NamedDependency[asyncpg.Connection],
    lang: FromQuery[str | None] = None,
) -> Response[bytes]:
    return await _create(request, state, conn, lang, "xml")


def _list(raw: str | None) -> list[str]:
    return [part.strip() for part in (raw or "").split(",") if part.strip()]


def _instant(raw: str, field: str, tz: ZoneInfo) -> datetime.datetime:
    text = raw.strip()
    # an unencoded + in a query string arrives as a space: 2026-01-01T08:00:00 08:00
    text = re.sub(r"(T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}:?\d{2})$", r"\1+\2", text)
    try:
        value = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(field, "give an ISO 8601 date and time, e.g. 2026-01-31T08:00:00+08:00") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=tz)


def _window(
    start_date: str | None, end_date: str | None, tz: ZoneInfo
) -> tuple[datetime.datetime, datetime.datetime]:
    start = None if start_date is None else _instant(start_date, "start_date", tz)
    end = None if end_date is None else _instant(end_date, "end_date", tz)
    if start is None and end is None:
        end = datetime.datetime.now(datetime.UTC)
    if start is None:
        assert end is not None
        start = end - WINDOW
    if end is None:
        end = start + WINDOW
    if end < start:
        raise InvalidInput("end_date", "comes before start_date")
    if end - start > WINDOW:
        raise InvalidInput("end_date", f"start_date to end_date may span at most {WINDOW.days} days")
    return start, end


class Filters(msgspec.Struct, frozen=True):
    """GET requests' query: the spec's filters, and `lang`."""

    service_request_id: str | None = None
    service_code: str | None = None
    start_date: str | None = None
    end_date: str | None = None
    status: str | None = None
    lang: str | None = None


async def _requests(
    request: Request[Any, Any, Any], state: State, conn: asyncpg.Connection, query: Filters
) -> list[ServiceRequest]:
    en, tz = english(request, query.lang), _tz(state)
    ids = [i.upper() for i in _list(query.service_request_id)]
    if ids:
        if len(ids) > MAX_RESULTS or any(len(i) > 64 for i in ids):
            raise InvalidInput("service_request_id", f"at most {MAX_RESULTS} ids of at most 64 characters")
        rows = db.queries.list_open311_requests_by_id(conn, ids=ids)
        return [_item(r, en, tz) async for r in rows]
    statuses = set(_list(query.status))
    if statuses - {"open", "closed"}:
        raise InvalidInput("status", "open or closed (or both, comma-separated)")
    states: list[str] | None = None
    if statuses == {"open"}:
        states = list(cases.OPEN_STATES)
    elif statuses == {"closed"}:
        states = list(CLOSED_STATES)
    start, end = _window(query.start_date, query.end_date, tz)
    rows = db.queries.list_open311_requests(
        conn,
        codes=_list(query.service_code) or None,
        states=states,
        start=start,
        end=end,
        days=cases.DUPLICATE_DAYS,
        limit=MAX_RESULTS,
    )
    return [_item(r, en, tz) async for r in rows]


@get(
    f"{PREFIX}/requests.json",
    opt=PUBLIC,
    tags=["open311"],
    exception_handlers=ERRORS,
    responses=BAD_REQUEST,
)
async def list_requests(
    request: Request[Any, Any, Any],
    state: State,
    conn: NamedDependency[asyncpg.Connection],
    service_request_id: FromQuery[str | None] = None,
    service_code: FromQuery[str | None] = None,
    start_date: FromQuery[str | None] = None,
    end_date: FromQuery[str | None] = None,
    status: FromQuery[str | None] = None,
    lang: FromQuery[str | None] = None,
    jurisdiction_id: FromQuery[str | None] = None,
) -> Response[list[ServiceRequest]]:
    """Service requests, newest first, at most 1000 (`requests.xml` in XML).
    `service_request_id` (comma-separated) picks requests by id and overrides every other filter;
    otherwise those requested between `start_date` and `end_date` (ISO 8601; the last 90 days by
    default, at most 90 days), narrowed by `service_code` and `status` (open, closed; both
    comma-separated lists)."""
    check_jurisdiction(state.settings, jurisdiction_id)
    query = Filters(service_request_id, service_code, start_date, end_date, status, lang)
    return respond("json", "service_requests", await _requests(request, state, conn, query))


@get(f"{PREFIX}/requests.xml", opt=PUBLIC, include_in_schema=False, exception_handlers=ERRORS)
async def list_requests_xml(
    request: Request[Any, Any, Any],
    state: State,
    conn: NamedDependency[asyncpg.Connection],
    service_request_id: FromQuery[str | None] = None,
    service_code: FromQuery[str | None] = None,
    start_date: FromQuery[str | None] = None,
    end_date: FromQuery[str | None] = None,
    status: FromQuery[str | None] = None,
    lang: FromQuery[str | None] = None,
    jurisdiction_id: FromQuery[str | None] = None,
) -> Response[bytes]:
    check_jurisdiction(state.settings, jurisdiction_id)
    query = Filters(service_request_id, service_code, start_date, end_date, status, lang)
    return respond("xml", "service_requests", await _requests(request, state, conn, query))


@get(
    f"{PREFIX}/requests/{{request_file:str}}",
    opt=PUBLIC,
    tags=["open311"],
    exception_handlers=ERRORS,
    responses=BAD_REQUEST,
    operation_class=InBothFormats,
)
async def get_request(
    request: Request[Any, Any, Any],
    state: State,
    conn: NamedDependency[asyncpg.Connection],
    request_file: FromPath[str],
    lang: FromQuery[str | None] = None,
    jurisdiction_id: FromQuery[str | None] = None,
) -> Response[list[ServiceRequest]]:
    """`requests/{service_request_id}.xml` or `.json`: one request, as a one-element list (404 if
    none)."""
    number, fmt = split_format(request_file)
    check_jurisdiction(state.settings, jurisdiction_id)
    rows = db.queries.list_open311_requests_by_id(conn, ids=[number.strip().upper()])
    found = [_item(r, english(request, lang), _tz(state)) async for r in rows]
    if not found:
        raise NotFound("no service request has this id")
    return respond(fmt, "service_requests", found)


class FromToken(msgspec.Struct, frozen=True):
    service_request_id: str
    token: str


@get(
    f"{PREFIX}/tokens/{{token_file:str}}",
    opt=PUBLIC,
    tags=["open311"],
    exception_handlers=ERRORS,
    responses=BAD_REQUEST,
    operation_class=InBothFormats,
)
async def get_token(
    state: State,
    conn: NamedDependency[asyncpg.Connection],
    token_file: FromPath[str],
    jurisdiction_id: FromQuery[str | None] = None,
) -> Response[list[FromToken]]:
    """`tokens/{token}.xml` or `.json`: the service_request_id of a token. Every service is
    `realtime` (a request's id is answered when it is filed, never a token), so the only tokens are
    the requests' own ids: a client that asks anyway gets the id back; anything else is a 404."""
    token, fmt = split_format(token_file)
    check_jurisdiction(state.settings, jurisdiction_id)
    token = token.strip().upper()
    found = None if len(token) > 64 else await db.queries.get_open311_request_id(conn, id=token)
    if found is None:
        raise NotFound("no service request has this token")
    return respond(fmt, "service_requests", [FromToken(service_request_id=found, token=token)])


@route(
    f"{PREFIX}/{{document:str}}",
    http_method=["GET", "POST"],
    opt=PUBLIC,
    tags=["open311"],
    include_in_schema=False,
    exception_handlers=ERRORS,
)
async def other_document(document: FromPath[str]) -> Response[list[Open311Error]]:
    """Anything else under the prefix: a 404 in Open311's error format (XML for a .xml path)."""
    raise NotFound(f"{PREFIX}/{document} is not a GeoReport v2 document: see {PREFIX}/discovery.xml")
