"""A shop owner claims their shop with the one-time code printed on the shop's QR letter."""

from __future__ import annotations

import datetime
import hmac
from typing import Annotated, Any, Literal

import asyncpg
import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromQuery, JSONBody, URLEncodedBody
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_201_CREATED

from merchant_code import access, audit, auth, db
from merchant_code.codes import parse_shop_code
from merchant_code.errors import Conflict, DomainError, InvalidInput, Unauthorized
from merchant_code.routes.auth import english, session_cookie

WRONG_CLAIM = "the claim code and phone number do not match a shop waiting to be claimed"
LOGIN_PATTERN = r"^[a-z0-9][a-z0-9._-]{2,63}$"


class ClaimBody(msgspec.Struct, forbid_unknown_fields=True):
    shop_code: Annotated[str, msgspec.Meta(min_length=1, max_length=40)]
    claim_code: Annotated[str, msgspec.Meta(min_length=1, max_length=40)]
    phone: Annotated[str, msgspec.Meta(min_length=1, max_length=30)]
    # a new account's login and password; left out when a logged-in merchant claims another shop
    login: Annotated[str, msgspec.Meta(pattern=LOGIN_PATTERN)] | None = None
    password: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    display_name: Annotated[str, msgspec.Meta(min_length=1, max_length=60)] | None = None


class Claimed(msgspec.Struct, frozen=True):
    login: str
    shop_code: str
    token: str | None
    expires_at: datetime.datetime | None


def _digits(phone: str) -> str:
    return "".join(ch for ch in phone if ch.isdigit())[-11:]


def _matches(shop: asyncpg.Record, hashed: str, phone: str) -> bool:
    """The claim code is the shop's unused one and the phone is the owner's on record (a record
    without a usable phone number cannot be claimed this way)."""
    stored_hash, stored_phone = shop["claim_code_hash"], shop["owner_phone"] or ""
    if stored_hash is None or len(_digits(stored_phone)) < 7:
        return False
    same_code = hmac.compare_digest(stored_hash, hashed)
    return same_code and hmac.compare_digest(_digits(stored_phone), _digits(phone))


async def claim(
    pools: tuple[asyncpg.Pool, asyncpg.Pool],
    *,
    settings: Any,
    key: bytes,
    body: ClaimBody,
    principal: auth.Principal | None,
    client: str | None,
    request_id: str | None,
) -> Claimed:
    if principal is not None and principal.role != "merchant":
        raise Conflict("only a merchant account can own a shop; log out first to claim as the owner")
    code = parse_shop_code(body.shop_code)
    if principal is None:
        if body.login is None:
            raise InvalidInput("login", "choose a login for the new account")
        if body.password is None:
            raise InvalidInput("password", "choose a password for the new account")
        auth.check_new_password(body.password)
    pool, side_pool = pools
    keys = auth.attempt_keys("claim", code, client)
    # counted first, so a flood of guesses costs no hashing; hashed before any connection is
    # taken: argon2 is slow on purpose
    ids = await auth.throttle(
        side_pool, keys, settings.throttle_failures, settings.throttle_minutes, settings.acquire_seconds
    )
    password_hash = (
        await auth.hash_password_off_loop(body.password) if principal is None and body.password else None
    )
    async with db.acquire(pool, settings.acquire_seconds) as conn:
        shop = await db.queries.get_shop_for_claim(conn, code=code)
        hashed = auth.claim_code_hash(body.claim_code)
        if shop is None or not _matches(shop, hashed, body.phone):
            raise Unauthorized(WRONG_CLAIM)  # the attempt stays recorded as a failure
        try:
            done = await _take_shop(
                conn, shop, hashed, body, password_hash, principal, key, settings, client, request_id
            )
        except InvalidInput:
            await auth.attempt_succeeded(conn, ids)  # the code was right; only the login needs changing
            raise
        await auth.attempt_succeeded(conn, ids, forget=keys[0][0])
    return done


async def _take_shop(
    conn: asyncpg.Connection,
    shop: asyncpg.Record,
    hashed: str,
    body: ClaimBody,
    password_hash: str | None,
    principal: auth.Principal | None,
    key: bytes,
    settings: Any,
    client: str | None,
    request_id: str | None,
) -> Claimed:
    """One transaction: use the code, replace the shop's owners, make or reuse the account."""
    code = shop["code"]
    async with conn.transaction():
        if await db.queries.use_claim_code(conn, id=shop["id"], claim_code_hash=hashed) is None:
            raise Unauthorized(WRONG_CLAIM)  # claimed a moment ago by a simultaneous request
        # whoever owned the shop before (an earlier operator) loses it with the new claim
        replaced = await db.queries.unlink_shop_owners(conn, shop_id=shop["id"])
        token = expires = None
        if principal is None:
            assert body.login is not None and password_hash is not None
            try:
                async with conn.transaction():
                    account_id = await db.queries.create_account(
                        conn,
                        login=body.login,
                        role="merchant",
                        area_id=None,
                        display_name=body.display_name or body.login,
                        phone=shop["owner_phone"],
                        password_hash=password_hash,
                        permissions=[],
                    )
            except asyncpg.UniqueViolationError:
                raise InvalidInput("login", "this login is taken; choose another") from None
            login = body.login
        else:
            account_id, login = principal.account_id, principal.login
        await db.queries.link_account_shop(conn, account_id=account_id, shop_id=shop["id"])
        await audit.append(
            conn,
            actor=account_id,
            action="shop.claim",
            object_type="shop",
            object_id=code,
            request_id=request_id,
            detail={"replaced_owners": replaced},
        )
        if principal is None:
            token, expires = await auth.open_session(conn, key, account_id, settings.token_minutes, client)
    return Claimed(login=login, shop_code=code, token=token, expires_at=expires)


@post("/api/v1/claims", opt={"access": "public"}, tags=["auth"], status_code=HTTP_201_CREATED)
async def api_claim(
    request: Request[Any, Any, Any],
    state: State,
    data: JSONBody[ClaimBody],
    principal: NamedDependency[auth.Principal | None],
) -> Claimed:
    """Claim a shop: its code, the one-time claim code from the QR letter and the owner's phone
    number. Without a session this creates a merchant account (login and password) and returns
    its token; a logged-in merchant adds the shop to their account. A wrong or used claim code
    and a wrong phone number get the same 401; repeated failures get 429."""
    return await claim(
        (state.pool, state.side_pool),
        settings=state.settings,
        key=state.signing_key,
        body=data,
        principal=principal,
        client=access.client_of(request),
        request_id=access.request_id_of(request),
    )


class ClaimForm(msgspec.Struct):
    shop_code: str = ""
    claim_code: str = ""
    phone: str = ""
    login: str = ""
    password: str = ""


@get("/claim", opt={"access": "public"}, tags=["pages"], include_in_schema=False)
async def claim_page(
    request: Request[Any, Any, Any],
    principal: NamedDependency[auth.Principal | None],
    lang: FromQuery[Literal["zh", "en"] | None] = None,
    shop: FromQuery[str] = "",
) -> Template:
    context = {
        "en": english(request, lang),
        "form": ClaimForm(shop_code=shop),
        "error": None,
        "me": principal,
    }
    return Template("claim.html.j2", context=context)


@post("/claim", opt={"access": "public"}, tags=["pages"], include_in_schema=False)
async def claim_submit(
    request: Request[Any, Any, Any],
    state: State,
    principal: NamedDependency[auth.Principal | None],
    data: URLEncodedBody[ClaimForm],
    lang: FromQuery[Literal["zh", "en"] | None] = None,
) -> Response[Any]:
    try:
        body = msgspec.convert(
            {
                k: v.strip() if k != "password" else v
                for k, v in msgspec.structs.asdict(data).items()
                if v or k in ("shop_code", "claim_code", "phone")
            },
            ClaimBody,
        )
        done = await claim(
            (state.pool, state.side_pool),
            settings=state.settings,
            key=state.signing_key,
            body=body,
            principal=principal,
            client=access.client_of(request),
            request_id=access.request_id_of(request),
        )
    except (DomainError, msgspec.ValidationError) as exc:
        field = getattr(exc, "field", None) or _field_of(exc)
        status = exc.status if isinstance(exc, DomainError) else 422
        context = {
            "en": english(request, lang),
            "form": msgspec.structs.replace(data, password=""),
            "error": status,
            "field": field,
            "me": principal,
        }
        return Template("claim.html.j2", context=context, status_code=status)
    redirect = Redirect(path=f"/s/{done.shop_code}", status_code=303)
    if done.token is not None:
        redirect.cookies.append(session_cookie(request, done.token, done.expires_at))
    return redirect


def _field_of(exc: Exception) -> str | None:
    text = str(exc)
    marker = "at `$."
    return text.split(marker, 1)[1].rstrip("`") if marker in text else None
