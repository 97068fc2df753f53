"""Logging in and out, for the API (bearer tokens) and for pages (an HTTP-only session cookie)."""

from __future__ import annotations

import datetime
from typing import Annotated, Any, Literal

import asyncpg
import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import Cookie, State
from litestar.di import NamedDependency
from litestar.params import FromQuery, JSONBody, QueryParameter, URLEncodedBody
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_200_OK, HTTP_204_NO_CONTENT

from merchant_code import access, audit, auth, db
from merchant_code.errors import DomainError, InvalidInput
from merchant_code.routes.params import check_coordinates

Login = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Password = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class LoginBody(msgspec.Struct, forbid_unknown_fields=True):
    login: Login
    password: Password


class PasswordBody(msgspec.Struct, forbid_unknown_fields=True):
    current_password: Password
    new_password: Password


class Me(msgspec.Struct, frozen=True):
    login: str
    role: str
    display_name: str
    area_code: str | None
    area_name: str | None
    shops: list[str]
    permissions: list[str]


def english(request: Request[Any, Any, Any], lang: str | None) -> bool:
    return is_english(lang, request.headers.get("accept-language", ""))


def is_english(lang: str | None, accept_language: str) -> bool:
    """English for `?lang=en`, or with no `lang` for an Accept-Language that starts with en."""
    return lang == "en" or (lang is None and accept_language.startswith("en"))


def session_cookie(request: Request[Any, Any, Any], value: str, expires: datetime.datetime | None) -> Cookie:
    settings = request.app.state.settings
    secure = (settings.public_url or "").startswith("https://")
    max_age = 0 if expires is None else int((expires - datetime.datetime.now(datetime.UTC)).total_seconds())
    return Cookie(
        key=access.COOKIE,
        value=value,
        httponly=True,
        samesite="lax",
        secure=secure,
        path="/",
        max_age=max_age,
    )


async def _log_in(request: Request[Any, Any, Any], state: State, login: str, password: str) -> auth.Session:
    return await auth.log_in(
        (state.pool, state.side_pool),
        key=state.signing_key,
        settings=state.settings,
        login=login,
        password=password,
        client=access.client_of(request),
        request_id=access.request_id_of(request),
    )


@post("/api/v1/auth/login", opt={"access": "public"}, tags=["auth"], status_code=HTTP_200_OK)
async def api_login(request: Request[Any, Any, Any], state: State, data: JSONBody[LoginBody]) -> auth.Session:
    """A bearer token for `Authorization: Bearer ...`. Wrong password, unknown login and a
    disabled account all get the same 401; repeated failures get 429 with Retry-After."""
    return await _log_in(request, state, data.login, data.password)


@post("/api/v1/auth/logout", opt={"access": "login"}, tags=["auth"], status_code=HTTP_204_NO_CONTENT)
async def api_logout(
    request: Request[Any, Any, Any],
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
) -> None:
    """Ends this session: its token stops working at once."""
    await end_session(conn, principal, access.request_id_of(request))


async def end_session(conn: asyncpg.Connection, principal: auth.Principal, request_id: str | None) -> None:
    await db.queries.revoke_session(conn, id=principal.session_id)
    await audit.append(
        conn,
        actor=principal.account_id,
        action="logout",
        object_type="account",
        object_id=principal.login,
        request_id=request_id,
    )


@post("/api/v1/auth/password", opt={"access": "login"}, tags=["auth"], status_code=HTTP_204_NO_CONTENT)
async def api_password(
    request: Request[Any, Any, Any],
    state: State,
    principal: NamedDependency[auth.Principal],
    data: JSONBody[PasswordBody],
) -> None:
    """Change the password; every other session of the account ends."""
    await change_password(state, principal, data, access.request_id_of(request))


async def change_password(
    state: State, principal: auth.Principal, data: PasswordBody, request_id: str | None
) -> None:
    """Someone holding a stolen session must not be able to guess the password behind it: wrong
    current passwords are throttled like logins, recorded on a connection of their own. No
    connection is held while the two hashes are checked and made (argon2 is slow on purpose)."""
    settings = state.settings
    keys = [(f"password:{principal.account_id}", 1)]
    ids = await auth.throttle(
        state.side_pool, keys, settings.throttle_failures, settings.throttle_minutes, settings.acquire_seconds
    )
    async with db.acquire(state.side_pool, settings.acquire_seconds) as side:
        stored = await db.queries.get_password_hash(side, account_id=principal.account_id)
    if not await auth.verify_password_off_loop(stored, data.current_password):
        raise InvalidInput("current_password", "the current password is wrong")
    auth.check_new_password(data.new_password)
    if data.new_password == data.current_password:
        raise InvalidInput("new_password", "the new password must differ from the current one")
    hashed = await auth.hash_password_off_loop(data.new_password)
    async with db.acquire(state.pool, settings.acquire_seconds) as conn, conn.transaction():
        await auth.attempt_succeeded(conn, ids, forget=keys[0][0])
        await db.queries.update_password(conn, account_id=principal.account_id, password_hash=hashed)
        await db.queries.revoke_sessions_of_account(
            conn, account_id=principal.account_id, keep=principal.session_id
        )
        await audit.append(
            conn,
            actor=principal.account_id,
            action="password.change",
            object_type="account",
            object_id=principal.login,
            request_id=request_id,
        )


async def me_of(conn: asyncpg.Connection, principal: auth.Principal) -> Me:
    me = db.one(await db.queries.get_me(conn, account_id=principal.account_id), Me)
    assert me is not None  # the session was just read with its account
    return me


@get("/api/v1/me", opt={"access": "login"}, tags=["auth"])
async def api_me(conn: NamedDependency[asyncpg.Connection], principal: NamedDependency[auth.Principal]) -> Me:
    """Who the token belongs to: role, area, shops, permissions."""
    return await me_of(conn, principal)


# --- pages ---------------------------------------------------------------------------------


class LoginForm(msgspec.Struct):
    login: str = ""
    password: str = ""
    next: str = ""


class PasswordForm(msgspec.Struct):
    current_password: str = ""
    new_password: str = ""


def safe_next(target: str | None) -> str:
    """Only a path on this site: never an open redirect to somewhere else."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/me"


@get("/login", opt={"access": "public"}, tags=["pages"], include_in_schema=False)
async def login_page(
    request: Request[Any, Any, Any],
    lang: FromQuery[Literal["zh", "en"] | None] = None,
    next: FromQuery[str] = "/me",
) -> Template:
    return Template(
        "login.html.j2", context={"en": english(request, lang), "next": safe_next(next), "error": None}
    )


@post("/login", opt={"access": "public"}, tags=["pages"], include_in_schema=False)
async def login_submit(
    request: Request[Any, Any, Any],
    state: State,
    data: URLEncodedBody[LoginForm],
    lang: FromQuery[Literal["zh", "en"] | None] = None,
) -> Response[Any]:
    en = english(request, lang)
    try:
        session = await _log_in(request, state, data.login.strip(), data.password)
    except DomainError as exc:
        context = {"en": en, "next": safe_next(data.next), "error": exc.status, "login": data.login}
        return Template("login.html.j2", context=context, status_code=exc.status)
    redirect = Redirect(path=safe_next(data.next), status_code=303)
    redirect.cookies.append(session_cookie(request, session.token, session.expires_at))
    return redirect


@post("/logout", opt={"access": "login"}, tags=["pages"], include_in_schema=False)
async def logout_submit(
    request: Request[Any, Any, Any],
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
) -> Response[Any]:
    await end_session(conn, principal, access.request_id_of(request))
    redirect = Redirect(path="/login", status_code=303)
    redirect.cookies.append(session_cookie(request, "", None))
    return redirect


@get("/me", opt={"access": "login"}, tags=["pages"], include_in_schema=False)
async def me_page(
    request: Request[Any, Any, Any],
    conn: NamedDependency[asyncpg.Connection],
    principal: NamedDependency[auth.Principal],
    lang: FromQuery[Literal["zh", "en"] | None] = None,
    changed: FromQuery[bool] = False,
    lat: Annotated[float | None, QueryParameter(ge=-90, le=90)] = None,
    lon: Annotated[float | None, QueryParameter(ge=-180, le=180)] = None,
) -> Template:
    """The account page; for staff also the due list of their area (nearest first within each
    risk band when the phone shares its position) and what waits for verification."""
    check_coordinates(lat=lat, lon=lon)
    me = await me_of(conn, principal)
    due: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []
    if principal.role != "merchant":
        prefix = None if principal.role == "admin" else principal.area_path
        near = lat is not None and lon is not None
        rows = db.queries.list_due_shops(
            conn, prefix=prefix, limit=10, lat=lat if near else None, lon=lon if near else None
        )
        due = [dict(r) async for r in rows]
        pending = [dict(r) async for r in db.queries.list_pending_submissions(conn, prefix=prefix, limit=10)]
    unread = None
    if principal.role == "merchant":
        unread = await db.queries.count_unread(conn, shop_ids=list(principal.shop_ids))
    context = {
        "en": english(request, lang),
        "me": me,
        "unread": unread,
        "error": None,
        "changed": changed,
        "due": due,
        "pending": pending,
        "near": lat is not None and lon is not None,
    }
    return Template("me.html.j2", context=context)


@post("/me/password", opt={"access": "login"}, tags=["pages"], include_in_schema=False)
async def password_submit(
    request: Request[Any, Any, Any],
    state: State,
    principal: NamedDependency[auth.Principal],
    data: URLEncodedBody[PasswordForm],
    lang: FromQuery[Literal["zh", "en"] | None] = None,
) -> Response[Any]:
    try:
        body = PasswordBody(current_password=data.current_password, new_password=data.new_password)
        await change_password(state, principal, body, access.request_id_of(request))
    except (InvalidInput, auth.TooManyAttempts) as exc:
        async with db.acquire(state.pool, state.settings.acquire_seconds) as conn:
            me = await me_of(conn, principal)
        error = exc.field if isinstance(exc, InvalidInput) else "throttled"
        context = {"en": english(request, lang), "me": me, "error": error, "changed": False}
        return Template("me.html.j2", context=context, status_code=exc.status)
    return Redirect(path="/me?changed=true", status_code=303)
