"""GET /s/{code}: the sticker's one URL, three views.

Anonymous people (and anyone asking for `?view=citizen`) get the citizen view from the
in-process cache (no round trip while the change watermark vouches for it; with the database
unreachable, the last answer known with its "as of" time). A signed-in owner gets the merchant
view; an inspector or manager whose area covers the shop gets the full view, personal data
masked unless the account holds `pii:read` (each unmasked read audited). Everyone else gets
the citizen view too: being signed in does not open other shops.

Every view says whether the sticker scanned is genuine (its `q` checked, genuine.py): the stored
answers take a banner spliced in per sticker status, so no scan renders anything.
"""

from __future__ import annotations

import datetime
import re
from typing import Any, Literal, NamedTuple
from urllib.parse import parse_qsl

import asyncpg
import msgspec
from litestar import Request, get
from litestar.params import FromPath, FromQuery
from litestar.response.base import ASGIResponse
from litestar.types import Scope, Send

from merchant_code import access, audit, auth, db, db_health, genuine, masking, notices, rendering
from merchant_code.codes import parse_shop_code
from merchant_code.errors import DomainError, InvalidInput, NotFound, Unreachable
from merchant_code.profile_cache import Entry, Kind
from merchant_code.routes.auth import english, is_english
from merchant_code.views import CitizenShop, InspectorShop, MerchantShop, risk_reasons

View = Literal["citizen", "merchant", "inspector"]
HTML = "text/html"  # the response adds "; charset=utf-8"
VARY = "Accept, Accept-Language, Authorization, Cookie"


def wants_json(request: Request[Any, Any, Any]) -> bool:
    return "application/json" in request.headers.get("accept", "")


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


def inspector_view(doc: dict[str, Any]) -> InspectorShop:
    return msgspec.convert(
        {**doc, "risk_reasons": risk_reasons(doc["risk_reasons"]), "pii_masked": False}, InspectorShop
    )


async def reveal_or_mask(
    conn: asyncpg.Connection, principal: auth.Principal, shop: InspectorShop, request_id: str | None
) -> InspectorShop:
    """Masked, unless the account holds `pii:read`: then unmasked and the read audited."""
    if "pii:read" not in principal.permissions:
        return masked(shop)
    fields = [f for f in ("owner_name", "owner_phone", "owner_id_number") if getattr(shop, f)]
    if shop.staff:
        fields.append(f"staff[{len(shop.staff)}]")
    async with conn.transaction():
        await audit.append(
            conn,
            actor=principal.account_id,
            action="pii.read",
            object_type="shop",
            object_id=shop.code,
            request_id=request_id,
            detail={"fields": fields},
        )
    return shop


def _problem(value: str | None) -> str | None:
    """The field a page write sent back (`licences.number`): shown only if it looks like one."""
    return value if value and re.fullmatch(r"[a-z_]{1,20}\.[a-z_]{1,30}", value) else None


def reply(body: bytes, media_type: str, headers: dict[str, str], status: int = 200) -> ASGIResponse:
    """The scan's answers are ready bytes: handed to the server as they are (no Response
    conversion on the hot path)."""
    return ASGIResponse(body=body, media_type=media_type, headers=headers, status_code=status)


def render(request: Request[Any, Any, Any], template: str, **context: Any) -> bytes:
    engine = request.app.template_engine
    assert engine is not None
    text: str = engine.get_template(template).render(**context)
    return text.encode()


class Scanned(NamedTuple):
    """The stored citizen answer of a scan, its kind and the status of the sticker scanned."""

    entry: Entry
    kind: Kind
    sticker: genuine.Status
    code: str
    as_of: datetime.datetime | None = None  # set when the database could not confirm it
    joined: notices.Joined = notices.NONE  # the trade's notices, spliced in when served


def citizen_parts(scanned: Scanned, if_none_match: str | None) -> tuple[int, dict[str, str], bytes]:
    """The stored answer with the sticker's status and the trade's notices spliced in, and an
    ETag of its version, those notices and that status (304 when the caller has it): status,
    headers and body, for the handler and the hot path alike."""
    entry, kind, sticker, code, as_of, joined = scanned
    # a key retired or revoked, or a notice sent to the trade, changes the answer without moving
    # the profile's version
    etag = f'W/"{entry.version}.{joined.tag}-{kind}-{sticker}"'
    headers = {"ETag": etag, "Vary": VARY, "Cache-Control": "no-cache"}
    if as_of is not None:
        del headers["ETag"]
        headers["Cache-Control"] = "no-store"
        headers["X-Data-As-Of"] = as_of.astimezone(datetime.UTC).isoformat()
    elif entry.status == 200 and if_none_match == etag:
        return 304, headers, b""
    piece = joined.piece(kind)
    body = rendering.compose(entry.body, entry.cut, entry.ncut, kind, sticker, code, piece, as_of)
    return entry.status, headers, body


def citizen_response(request: Request[Any, Any, Any], scanned: Scanned) -> ASGIResponse:
    if scanned.entry.status == 410 and scanned.kind == "json":
        raise NotFound("this sticker has been revoked")
    status, headers, body = citizen_parts(scanned, request.headers.get("if-none-match"))
    return reply(body, "application/json" if scanned.kind == "json" else HTML, headers, status)


async def scanned_answer(
    state: Any, conn: asyncpg.Connection, code: str, kind: Kind, sent: genuine.Claim
) -> Scanned:
    """The stored answer and the sticker's status, from the one read (NotFound: no shop)."""
    cache = state.profile_cache
    entry, key = await cache.scan(conn, code, kind, sent.kid)
    joined = cache.notices.joined(entry.audience)
    return Scanned(entry, kind, state.sticker_checker.status(code, sent, key), code, None, joined)


async def citizen_scan(state: Any, code: str, kind: Kind, sent: genuine.Claim) -> Scanned:
    """From memory when the watermark vouches for it; else one read; with the database
    unreachable, the last answer known with its "as of" time, or 503 at once (NotFound: no
    shop)."""
    cache = state.profile_cache
    # once this worker knows the database is down, even an answer confirmed a moment ago says so
    got = None if db_health.state.down else cache.cached(code, kind, sent.kid)
    as_of = None
    if got is None:
        if not db_health.state.down:
            try:
                async with db.acquire(state.scan_pool, state.settings.acquire_seconds) as conn:
                    got = await cache.scan(conn, code, kind, sent.kid)
            except db_health.LOST as exc:
                if db_health.is_lost(exc):
                    db_health.state.lost(exc)
            except Unreachable:
                pass  # the connect failed: acquire has set the state
        if got is None:
            got, as_of = cache.stale(code, kind, sent.kid), cache.as_of
    entry, key = got
    joined = cache.notices.joined(entry.audience)
    return Scanned(entry, kind, state.sticker_checker.status(code, sent, key), code, as_of, joined)


def kind_of(accept: str, en: bool) -> Kind:
    """JSON for `Accept: application/json`; else the page in English or Chinese."""
    return "json" if "application/json" in accept else ("en" if en else "zh")


def answer_kind(request: Request[Any, Any, Any], en: bool) -> Kind:
    return kind_of(request.headers.get("accept", ""), en)


async def anonymous_scan(scope: Scope, send: Send) -> bool:
    """The scan's hot path: an anonymous GET whose answer is the stored citizen answer, sent
    straight from the cache by the identity middleware once it has applied the route's rule
    (`opt["hot_path"]`), without Litestar's per-request handler machinery (a request object,
    the signature model, the response object: a fifth of a scan's cost). False for anything
    else (a signed-in caller, `?view=`, a bad `lang`, an invalid, unknown or revoked code): the
    handler below then answers, as it would have anyway."""
    if scope.get("method") != "GET" or scope["state"].get("principal") is not None:
        return False
    lang = None
    signatures: list[str] = []
    if scope["query_string"]:
        # other parameters (a campaign's tag) are ignored, as the handler ignores them; `view`, a
        # repeated or unknown `lang` are the handler's to answer
        for key, value in parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True):
            if key == "view" or (key == "lang" and (lang is not None or value not in ("zh", "en"))):
                return False
            if key == "lang":
                lang = value
            elif key == "q":
                signatures.append(value)
    accept = accept_language = ""
    if_none_match = None
    for header, raw_value in scope["headers"]:  # the first of each, as Litestar's headers.get
        if header == b"accept":
            accept = accept or bytes(raw_value).decode("latin-1")
        elif header == b"accept-language":
            accept_language = accept_language or bytes(raw_value).decode("latin-1")
        elif header == b"if-none-match" and if_none_match is None:
            if_none_match = bytes(raw_value).decode("latin-1")
    try:
        code = parse_shop_code(scope["path_params"]["code"])
    except InvalidInput:
        return False
    kind = kind_of(accept, is_english(lang, accept_language))
    state = scope["litestar_app"].state
    try:
        scanned = await citizen_scan(state, code, kind, genuine.claim(signatures))
    except NotFound:
        return False
    if scanned.entry.status == 410 and kind == "json":
        return False
    status, headers, body = citizen_parts(scanned, if_none_match)
    media = b"application/json" if kind == "json" else b"text/html; charset=utf-8"
    # as Litestar's response: a 304 says nothing of a body
    out = [] if status == 304 else [(b"content-type", media), (b"content-length", str(len(body)).encode())]
    out.extend((name.lower().encode(), value.encode()) for name, value in headers.items())
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": body, "more_body": False})
    return True


def json_with_sticker(shop: msgspec.Struct, scanned: Scanned) -> bytes:
    body = msgspec.json.encode(shop)
    cut = rendering.banner_cut("json", body)
    return rendering.with_banner(body, cut, "json", scanned.sticker, scanned.code)


def citizen_preview(
    request: Request[Any, Any, Any], doc: dict[str, Any], en: bool, scanned: Scanned
) -> ASGIResponse:
    """A signed-in owner's or inspector's preview of the citizen view: rendered now, since it
    carries a way back to their own view."""
    shop = msgspec.convert({**doc, "notices": scanned.joined.notices}, CitizenShop)
    if wants_json(request):
        return reply(
            json_with_sticker(shop, scanned),
            "application/json",
            {"Vary": VARY, "Cache-Control": "private, no-store"},
        )
    body = render(
        request,
        "scan.html.j2",
        shop=shop,
        view="citizen",
        en=en,
        preview=True,
        base=_base(request),
        sticker=scanned.sticker,
    )
    return reply(body, HTML, {"Vary": VARY, "Cache-Control": "private, no-store"})


def _base(request: Request[Any, Any, Any]) -> str:
    settings = request.app.state.settings
    return str(settings.base_url)


def invalid_sticker(
    request: Request[Any, Any, Any], error: DomainError, en: bool, revoked: bool = False
) -> ASGIResponse:
    """A code that is malformed, unknown or revoked: for a browser, a page that says the sticker
    is not valid and how to report it; for an API client, the problem document."""
    if wants_json(request):
        raise error
    status = 410 if revoked else error.status
    body = render(request, "sticker_invalid.html.j2", en=en, revoked=revoked, status=status)
    return reply(body, HTML, {"Vary": VARY}, status)


@get("/s/{code:str}", opt={"access": "public", "hot_path": anonymous_scan}, tags=["scan"])
async def scan(
    request: Request[Any, Any, Any],
    code: FromPath[str],
    lang: FromQuery[Literal["zh", "en"] | None] = None,
    view: FromQuery[Literal["citizen"] | None] = None,
) -> ASGIResponse:
    """The shop behind a sticker: HTML (Chinese by default; `?lang=en` or Accept-Language for
    English) or JSON for `Accept: application/json`, in the caller's view. `?view=citizen` lets a
    signed-in owner or inspector preview what citizens see."""
    # the app state and the caller are read directly: dependency injection costs more than the
    # rest of a cached scan
    state = request.app.state
    principal = access.principal_of(request)
    en = english(request, lang)
    try:
        parsed = parse_shop_code(code)
    except InvalidInput as exc:
        return invalid_sticker(request, exc, en)
    sent = genuine.claim_of(request.scope["query_string"])
    if principal is None:
        try:
            scanned = await citizen_scan(state, parsed, answer_kind(request, en), sent)
            return citizen_response(request, scanned)
        except NotFound as exc:
            return invalid_sticker(request, exc, en)
    async with db.acquire(state.scan_pool, state.settings.acquire_seconds) as conn:
        try:
            # makes sure the profile exists, for the views of signed-in callers too
            scanned = await scanned_answer(state, conn, parsed, answer_kind(request, en), sent)
            return await _signed_in(request, conn, principal, scanned, en, preview=view == "citizen")
        except NotFound as exc:
            return invalid_sticker(request, exc, en)


async def _signed_in(
    request: Request[Any, Any, Any],
    conn: asyncpg.Connection,
    principal: auth.Principal,
    scanned: Scanned,
    en: bool,
    preview: bool,
) -> ASGIResponse:
    code = scanned.code
    row = await db.queries.get_full_profile(conn, code=code)
    chosen: View = "citizen"
    if row is not None and not preview:
        if row["shop_id"] in principal.shop_ids:
            chosen = "merchant"
        elif principal.covers(row["area_path"]):
            chosen = "inspector"
    if chosen == "citizen":
        staff_preview = (
            preview
            and row is not None
            and (row["shop_id"] in principal.shop_ids or principal.covers(row["area_path"]))
        )
        if staff_preview and row is not None:
            return citizen_preview(request, row["citizen_doc"], en, scanned)
        return citizen_response(request, scanned)
    assert row is not None
    shop: MerchantShop | InspectorShop
    if chosen == "merchant":
        shop = msgspec.convert(await notices.with_own(conn, row, "merchant_doc"), MerchantShop)
    else:
        doc = await notices.with_own(conn, row, "full_doc")
        shop = await reveal_or_mask(conn, principal, inspector_view(doc), access.request_id_of(request))
    headers = {"Vary": VARY, "Cache-Control": "private, no-store"}
    if wants_json(request):
        return reply(json_with_sticker(shop, scanned), "application/json", headers)
    codes = [dict(r) async for r in db.queries.list_violation_codes(conn)] if chosen == "inspector" else []
    body = render(
        request,
        "scan.html.j2",
        codes=codes,
        notice=request.query_params.get("done"),
        problem=_problem(request.query_params.get("error")),
        shop=shop,
        view=chosen,
        en=en,
        preview=False,
        base=_base(request),
        me=principal,
        today=datetime.date.today(),
        sticker=scanned.sticker,
    )
    return reply(body, HTML, headers)
