"""Every route's access rule, and the middleware that finds out who is asking.

A handler declares `opt={"access": RULE}`; `create_app` refuses a route without one, and the
guard enforces it before the handler runs. Object-level checks (this shop, this area) happen in
the handlers through `require_shop`, once they know which object is meant.
"""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from merchant_code import auth
from merchant_code.errors import Forbidden, NotFound, Unauthorized

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


def token_of(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
        if name == b"cookie":
            for part in value.decode("latin-1").split(";"):
                key, _, val = part.strip().partition("=")
                if key == COOKIE and val:
                    return val
    return None


class IdentityMiddleware(ASGIMiddleware):
    """Puts `principal` (or None) and, for a bad token, `auth_error` into the request state.

    A bad token on a public route still gets the public answer: a citizen with an old cookie
    should see the shop, not an error.
    """

    scopes = ("http",)  # type: ignore[assignment]

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        state: dict[str, Any] = scope.setdefault("state", {})  # type: ignore[typeddict-item]
        state["principal"] = None
        token = token_of(scope)
        if token:
            app_state = scope["litestar_app"].state
            try:
                async with app_state.pool.acquire() as conn:
                    state["principal"] = await auth.principal_for(conn, app_state.signing_key, token)
            except Unauthorized as exc:
                state["auth_error"] = exc.detail
        await next_app(scope, receive, send)


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> auth.Principal | None:
    principal: auth.Principal | None = connection.scope.get("state", {}).get("principal")
    return principal


def access_guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    rule = handler.opt.get("access")
    if rule not in RULES:
        raise Forbidden("this route declares no access rule")
    if rule == "public":
        return
    principal = principal_of(connection)
    if principal is None:
        error = connection.scope.get("state", {}).get("auth_error")
        raise Unauthorized(error or "log in first")
    if principal.role not in RULES[rule]:
        raise Forbidden("your account may not do this")


def require_shop(principal: auth.Principal | None, shop_id: int, area_path: str) -> auth.Principal:
    """The shop's owner, or staff whose area covers it. Anyone else is told the shop does not exist,
    so that probing ids or codes says nothing about other shops."""
    if principal is not None and (shop_id in principal.shop_ids or principal.covers(area_path)):
        return principal
    raise NotFound("no such shop")


def provide_principal(connection: ASGIConnection[Any, Any, Any, Any]) -> auth.Principal | None:
    return principal_of(connection)
