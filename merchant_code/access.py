"""Every route's access rule, and the middleware that finds out who is asking.

A handler declares `opt={"access": RULE}`; `create_app` refuses a route without one, and the
identity middleware (which runs once the route is known) enforces it before the handler runs.
It is not a Litestar guard because Litestar copies the route handler for every guard call, a
cost every scan would pay. Object-level checks (this shop, this area) happen in
the handlers through `require_shop`, once they know which object is meant.
"""

from __future__ import annotations

import itertools
import os
import re
from typing import Any
from urllib.parse import quote, urlsplit

from litestar import Litestar, Request, Response
from litestar.connection import ASGIConnection
from litestar.middleware import ASGIMiddleware
from litestar.response import Redirect
from litestar.routes import HTTPRoute
from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Message,
    Receive,
    Scope,
    Send,
)

from merchant_code import auth, db, flood
from merchant_code.errors import Forbidden, NotFound, StartupError, Unauthorized, domain_problem

COOKIE = "mc_session"
# rule -> roles that pass it (public passes everyone, anonymous included)
RULES: dict[str, frozenset[str]] = {
    "public": frozenset(),
    "login": frozenset({"merchant", "inspector", "manager", "admin"}),
    "merchant": frozenset({"merchant"}),
    "staff": frozenset({"inspector", "manager", "admin"}),
    "manager": frozenset({"manager", "admin"}),
    "admin": frozenset({"admin"}),
}


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


def _header(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope.get("headers", []):
        if name == wanted:
            return bytes(value).decode("latin-1")
    return None


def token_from(authorization: str | None, cookies: list[bytes]) -> str | None:
    """The session token of an Authorization header or, failing one, of the session cookie. A
    bearer header wins over a cookie."""
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        return token.strip() or None if scheme.lower() == "bearer" else None
    for value in cookies:
        for part in bytes(value).decode("latin-1").split(";"):
            key, _, val = part.strip().partition("=")
            if key == COOKIE and val:
                return val
    return None


def request_id_for(incoming: str | None) -> str:
    """The caller's X-Request-Id if it is a sane one, else a new id."""
    return incoming if incoming and REQUEST_ID.match(incoming) else new_request_id()


def cross_site(scope: Scope, public_url: str | None) -> bool:
    """A state-changing request sent by a page of another site (its Origin is neither this host
    nor the configured public URL). Refused whether or not it carries a session: a forged login
    form would otherwise log a victim into the attacker's account."""
    if scope.get("method", "GET") in SAFE_METHODS:
        return False
    origin = _header(scope, b"origin")
    if origin is None:  # not sent by a browser page (curl, an app, an old browser's same-site form)
        return False
    if origin == "null":
        return True
    here = {_header(scope, b"host") or ""}
    if public_url:
        here.add(urlsplit(public_url).netloc)
    return urlsplit(origin).netloc not in here


def client_address(scope: Scope, trusted_proxies: frozenset[str] = frozenset()) -> str | None:
    """The caller's address; behind a trusted proxy, the last address it added to X-Forwarded-For
    that is not itself a trusted proxy."""
    client = scope.get("client")
    peer = str(client[0]) if client else None
    if peer is None or peer not in trusted_proxies:
        return peer
    forwarded = _header(scope, b"x-forwarded-for")
    hops = [hop.strip() for hop in (forwarded or "").split(",") if hop.strip()]
    for hop in reversed(hops):
        if hop not in trusted_proxies:
            return hop
    return peer


class IdentityMiddleware(ASGIMiddleware):
    """Puts `principal` (or None) and, for a bad token, `auth_error` into the request state, then
    applies the route's access rule (`check_access`).

    A bad token on a public route still gets the public answer: a citizen with an old cookie
    should see the shop, not an error.
    """

    scopes = ("http",)  # type: ignore[assignment]

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        db.start_request()
        state: dict[str, Any] = scope.setdefault("state", {})
        state["principal"] = None
        # the headers this needs, in one pass (a scan runs this on every request)
        incoming = authorization = None
        cookies: list[bytes] = []
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = incoming or bytes(value).decode("latin-1")
            elif name == b"authorization":
                authorization = authorization or bytes(value).decode("latin-1")
            elif name == b"cookie":
                cookies.append(value)
        state["request_id"] = request_id_for(incoming)
        app_state = scope["litestar_app"].state
        settings = app_state.settings
        state["client_address"] = client_address(scope, app_state.trusted_proxies)
        gate = app_state.flood_gate
        if gate is not None and scope["path"].startswith("/s/"):
            address = state["client_address"] or ""
            if not gate.allow(address):
                await _refuse_flood(send, gate.retry_after(address))
                return
        state["cross_site"] = cross_site(scope, settings.public_url)
        token = token_from(authorization, cookies)
        if token and not state["cross_site"]:
            try:
                async with db.acquire(app_state.pool, settings.acquire_seconds) as conn:
                    state["principal"] = await auth.principal_for(conn, app_state.signing_key, token)
            except Unauthorized as exc:
                state["auth_error"] = exc.detail
        check_access(scope, state)
        # a route may answer its commonest request itself, as raw ASGI (the scan: routes/scan.py)
        hot_path = scope["route_handler"].opt.get("hot_path")
        if hot_path is not None and await hot_path(scope, send):
            return
        await next_app(scope, receive, send)


async def add_request_id(message: Message, scope: Scope) -> None:
    """Litestar's before_send hook: every answer carries X-Request-Id, the errors raised before
    any handler ran (no route, no access, a flood) included."""
    if message["type"] == "http.response.start":
        state = scope.setdefault("state", {})
        request_id = state.get("request_id")
        if request_id is None:  # the middleware did not run: no route matched
            state["request_id"] = request_id = request_id_for(_header(scope, b"x-request-id"))
        message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id.encode())]


class _RequestIds:
    """24 hex digits, unique among this service's requests without a system call each: a random
    prefix per process, made again in every forked worker, and a counter."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.prefix = os.urandom(6).hex()
        self.counter = itertools.count()

    def new(self) -> str:
        return f"{self.prefix}{next(self.counter) & 0xFFFFFFFFFFFF:012x}"  # wraps after 2^48


_request_ids = _RequestIds()
new_request_id = _request_ids.new


async def _refuse_flood(send: Send, retry_after: int) -> None:
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": 429,
        "headers": [
            (b"content-type", b"application/problem+json"),
            (b"retry-after", str(retry_after).encode()),
        ],
    }
    body: HTTPResponseBodyEvent = {"type": "http.response.body", "body": flood.TOO_MANY, "more_body": False}
    await send(start)
    await send(body)


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> auth.Principal | None:
    principal: auth.Principal | None = connection.scope.get("state", {}).get("principal")
    return principal


def check_access(scope: Scope, state: dict[str, Any]) -> None:
    """The route's access rule, given who is asking (raises Forbidden or Unauthorized)."""
    if state.get("cross_site"):
        raise Forbidden("a page of another site cannot send this request")
    handler = scope.get("route_handler")
    rule = handler.opt.get("access") if handler is not None else None
    if rule is None and scope.get("method") == "OPTIONS":
        return  # Litestar's automatic OPTIONS answer says only which methods exist
    if rule not in RULES:
        raise Forbidden("this route declares no access rule")
    if rule == "public":
        return
    principal: auth.Principal | None = state.get("principal")
    if principal is None:
        raise Unauthorized(state.get("auth_error") or "log in first")
    if principal.role not in RULES[rule]:
        raise Forbidden("your account may not do this")


def require_shop(principal: auth.Principal | None, shop_id: int, area_path: str) -> auth.Principal:
    """The shop's owner, or staff whose area covers it. Anyone else is told the shop does not exist,
    so that probing ids or codes says nothing about other shops."""
    if principal is not None and (shop_id in principal.shop_ids or principal.covers(area_path)):
        return principal
    raise NotFound("no such shop")


def provide_principal(request: Request[Any, Any, Any]) -> auth.Principal | None:
    return principal_of(request)


def client_of(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    value: str | None = connection.scope.get("state", {}).get("client_address")
    return value


def request_id_of(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    value: str | None = connection.scope.get("state", {}).get("request_id")
    return value


def check_routes(app: Litestar) -> None:
    """Refuse to start with a route that declares no rule (or one that does not exist)."""
    missing = [
        f"{method} {route.path}"
        for route in app.routes
        if isinstance(route, HTTPRoute)
        for method, handler in route.route_handler_map.items()
        if method != "OPTIONS" and handler[0].opt.get("access") not in RULES
    ]
    if missing:
        raise StartupError("routes without an access rule: " + ", ".join(sorted(missing)))
    # the identity middleware applies the rules to HTTP requests only
    uncovered = [route.path for route in app.routes if not isinstance(route, HTTPRoute)]
    if uncovered:
        raise StartupError("routes that are not HTTP (no access rule is applied): " + ", ".join(uncovered))


def login_redirect(request: Request[Any, Any, Any], exc: Unauthorized) -> Response[Any]:
    """A person on a page without a session is sent to log in and brought back; an API client
    (or anyone asking for JSON) gets the 401 problem."""
    wants_json = "json" in request.headers.get("accept", "")
    if request.url.path.startswith("/api/") or wants_json:
        return domain_problem(request, exc)
    back = request.url.path if request.method == "GET" else "/me"
    return Redirect(path=f"/login?next={quote(back, safe='/')}", status_code=303)
