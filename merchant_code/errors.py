"""One domain exception tree, mapped once to RFC 9457 problem details.

Handlers raise these; `problem_handlers` turns them (and Litestar's own HTTP errors, and
anything unexpected) into `application/problem+json` with no stack trace in the body.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import asyncpg
import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import ExceptionHandlersMap

from merchant_code import db_health

log = logging.getLogger("merchant_code")

PROBLEM_TYPE = "https://merchant-code.org/problems/"


class DomainError(Exception):
    """Base of every error the service means to tell a client about."""

    status = 400
    slug = "bad-request"
    title = "Bad request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class InvalidInput(DomainError):
    """A value a person sent is not acceptable; `field` names which one."""

    status = 422
    slug = "invalid-input"
    title = "Invalid input"

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(detail, errors=[{"field": field, "message": detail}])
        self.field = field


class UnreadableBody(InvalidInput):
    """A body that cannot be read as what it claims to be (malformed or too deeply nested JSON, a
    number out of range): a 400, as for any body Litestar itself cannot decode."""

    status = 400


class NotFound(DomainError):
    status = 404
    slug = "not-found"
    title = "Not found"


class Conflict(DomainError):
    status = 409
    slug = "conflict"
    title = "Conflict"


class Gone(DomainError):
    status = 410
    slug = "gone"
    title = "Gone"


class Unauthorized(DomainError):
    status = 401
    slug = "unauthorized"
    title = "Login required"


class Forbidden(DomainError):
    status = 403
    slug = "forbidden"
    title = "Not allowed"


class TooManyRequests(DomainError):
    """A client past its rate (per address, across the service's workers)."""

    status = 429
    slug = "too-many-requests"
    title = "Too many requests"


class Unavailable(DomainError):
    status = 503
    slug = "unavailable"
    title = "Service unavailable"


class Unreachable(Unavailable):
    """The database cannot be reached (known to be down, or a connect that just failed)."""


class Busy(Unavailable):
    """No connection, hashing slot or write slot came free in time: 503 with Retry-After, never a
    hang."""

    slug = "busy"


class RequestTimeout(DomainError):
    """The request body did not arrive within its deadline."""

    status = 408
    slug = "request-timeout"
    title = "Request timeout"


class BodyTooLarge(DomainError):
    status = 413
    slug = "too-large"
    title = "Request body too large"


class StartupError(Exception):
    """The service cannot start; the message is one line a person can act on."""


class BadArgument(DomainError):
    """A command's argument, or a file it names, that cannot be used (an unknown source or shop
    code, a malformed file): the CLI says so in one line and exits 2."""


class Problem(msgspec.Struct, omit_defaults=True):
    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None


def problem_response(request: Request[Any, Any, Any], problem: Problem) -> Response[bytes]:
    problem.instance = request.url.path
    return Response(
        content=msgspec.json.encode(problem),
        status_code=problem.status,
        media_type="application/problem+json",
    )


def domain_problem(request: Request[Any, Any, Any], exc: DomainError) -> Response[bytes]:
    problem = Problem(
        type=PROBLEM_TYPE + exc.slug,
        title=exc.title,
        status=exc.status,
        detail=exc.detail,
        errors=exc.extra.get("errors"),
    )
    response = problem_response(request, problem)
    if "retry_after" in exc.extra:
        response.headers["Retry-After"] = str(exc.extra["retry_after"])
    return response


def _validation(request: Request[Any, Any, Any], exc: ValidationException) -> Response[bytes]:
    errors = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(item, dict):
            message = str(item.get("message", ""))
            errors.append(
                {"field": _field_named(str(item.get("key") or "body"), message), "message": message}
            )
    problem = Problem(
        type=PROBLEM_TYPE + "invalid-input",
        title="Invalid input",
        status=400,
        detail=str(exc.detail),
        errors=errors or None,
    )
    return problem_response(request, problem)


def _field_named(key: str, message: str) -> str:
    """The field a person should look at: the unknown or missing one, the nested one, or the body."""
    if unknown := re.search(r"(?:unknown|missing required) field `([^`]+)`", message):
        prefix = "" if key in ("data", "body") else key + "."
        return prefix + unknown.group(1)
    if nested := re.search(r"at `\$\.([^`]+)`", message):
        return nested.group(1)
    return "body" if key == "data" else key


def _http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    if exc.status_code == 400:  # the body could not be decoded at all (not JSON, cut short)
        problem = Problem(
            type=PROBLEM_TYPE + "invalid-input",
            title="Invalid input",
            status=400,
            detail=f"the request body cannot be read: {exc.detail}",
            errors=[{"field": "body", "message": str(exc.detail)}],
        )
        return problem_response(request, problem)
    problem = Problem(
        type="about:blank",
        title=exc.detail if exc.status_code < 500 else "Internal server error",
        status=exc.status_code,
    )
    response = problem_response(request, problem)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


def unstorable_text(request: Request[Any, Any, Any]) -> InvalidInput:
    """PostgreSQL refused a text a client sent: it held a NUL character (U+0000), which no text or
    jsonb column can store. Its field, when it was a query or path parameter; otherwise the body."""
    field = next((k for k, v in request.query_params.multi_items() if "\x00" in k + v), None)
    path = (k for k, v in request.path_params.items() if isinstance(v, str) and "\x00" in v)
    return InvalidInput(field or next(path, "body"), "text cannot contain the NUL character (U+0000)")


# what PostgreSQL answers to such a text (as a text parameter; as a jsonb \u0000 escape)
UNSTORABLE_TEXT = (asyncpg.CharacterNotInRepertoireError, asyncpg.UntranslatableCharacterError)


def _unstorable(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    return domain_problem(request, unstorable_text(request))


def _statement_timeout(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    # the statement outlived its kind's statement_timeout (bulkheads.py): the service is busy,
    # not broken, and the client may try again
    log.warning("statement timeout on %s %s", request.method, request.url.path)
    busy = Busy("the service is busy; try again in a moment", retry_after=1)
    return domain_problem(request, busy)


def _database_lost(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    db_health.state.lost(exc)
    return domain_problem(request, Unreachable(db_health.UNREACHABLE, retry_after=db_health.RETRY_AFTER))


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    problem = Problem(
        type="about:blank",
        title="Internal server error",
        status=HTTP_500_INTERNAL_SERVER_ERROR,
        detail="Something went wrong on our side; it has been logged.",
    )
    return problem_response(request, problem)


problem_handlers: ExceptionHandlersMap = {
    DomainError: domain_problem,
    ValidationException: _validation,
    HTTPException: _http,
    **dict.fromkeys(UNSTORABLE_TEXT, _unstorable),
    asyncpg.QueryCanceledError: _statement_timeout,
    **dict.fromkeys(db_health.LOST_UNDER_QUERY, _database_lost),
    Exception: _unexpected,
}
