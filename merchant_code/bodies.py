"""What the OpenAPI document says of bodies Litestar cannot see: the request bodies of the
writes that read their body themselves, and the problem details every error answers with.

Those writes take JSON from API clients and a form from pages and phones (`forms.read`, with an
optional image or photo), so their handlers have no `data` parameter for Litestar to describe.
`body_of(Struct, ...)` gives the handler an `operation_class` that adds the body: the struct's
JSON Schema (from msgspec, the same struct the handler reads into) for `application/json`, and the
same fields, plus the file, for the form. API clients and Schemathesis then see what to send.

`document_problems(app)` replaces Litestar's default description of a 400 (its own error shape,
which this service never sends) by what every 4xx answer really is: `application/problem+json`
(RFC 9457) with the field at fault in `errors`. Open311's operations keep their own error format.
It also lists the statuses the service's limits answer on any operation (408, 413, 429, 503 with
Retry-After) and the pages the scan answers a browser with for a bad sticker.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from litestar import Litestar
from litestar.openapi.spec import (
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Reference,
    RequestBody,
    Schema,
)
from litestar.openapi.spec.base import BaseSchemaObject

from merchant_code import uploads
from merchant_code.errors import Problem

FormKind = Literal["multipart/form-data", "application/x-www-form-urlencoded"]


@dataclass
class RawSchema(BaseSchemaObject):
    """A JSON Schema written out as it is (msgspec's, not Litestar's schema objects)."""

    raw: dict[str, Any]

    def to_schema(self) -> dict[str, Any]:
        return copy.deepcopy(self.raw)


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """msgspec's `#/$defs/...` references replaced by what they name (the body structs are not
    recursive), so the schema stands alone inside the operation."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def _not_null(prop: dict[str, Any]) -> dict[str, Any]:
    """A form cannot send null: an optional field is one left out."""
    prop = {k: v for k, v in prop.items() if not (k == "default" and v is None)}
    options = [o for o in prop.pop("anyOf", []) if o != {"type": "null"}]
    if len(options) == 1:
        prop.update(options[0])
    elif options:
        prop["anyOf"] = options
    return prop


def json_schema(struct: type) -> dict[str, Any]:
    schema = msgspec.json.schema(struct)
    inlined: dict[str, Any] = _inline(schema, schema.get("$defs", {}))
    return inlined


def body_of(
    struct: type,
    *,
    file_field: str | None = None,
    form: FormKind = "multipart/form-data",
    description: str | None = None,
) -> type[Operation]:
    """An Operation class whose request body is `struct` as JSON or as a form (with `file_field`,
    an image of at most uploads.MAX_BYTES, when given)."""
    as_json = json_schema(struct)
    as_form = copy.deepcopy(as_json)
    as_form.pop("additionalProperties", None)
    as_form["properties"] = {k: _not_null(v) for k, v in as_form.get("properties", {}).items()}
    if file_field is not None:
        as_form.setdefault("properties", {})[file_field] = {
            "type": "string",
            "format": "binary",
            "description": f"JPEG, PNG or WebP, at most {uploads.MAX_BYTES // (1024 * 1024)} MB",
        }
    request_body = RequestBody(
        content={
            "application/json": OpenAPIMediaType(schema=RawSchema(as_json)),  # type: ignore[arg-type]
            form: OpenAPIMediaType(schema=RawSchema(as_form)),  # type: ignore[arg-type]
        },
        description=description,
        required=True,
    )

    @dataclass
    class WithBody(Operation):
        def __post_init__(self) -> None:
            if self.request_body is None:
                self.request_body = request_body

    return WithBody


OWN_ERRORS = ("/open311/",)  # paths whose operations answer errors in their own documented format
DOCUMENT_PAGES = ("/schema/",)  # the OpenAPI document's own pages, served by Litestar
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
RETRY_AFTER = OpenAPIHeader(
    schema=Schema(type=OpenAPIType.INTEGER, minimum=0),
    description="seconds to wait before asking again",
)
# the statuses any operation may answer whatever its handler does: a body too slow (408, for the
# operations that read one) or too large (413), too many requests (429: per-client limits, login
# and claim throttles, scan floods) and the database unavailable or busy (503), both with when to
# come back
LIMITS: dict[str, tuple[str, bool, bool]] = {  # status -> description, needs a body, Retry-After
    "408": ("The body did not arrive in time", True, False),
    "413": ("The body is larger than the service accepts", True, False),
    "429": ("Too many requests from this client or for this account: wait as Retry-After says", False, True),
    "503": ("The database is unavailable or busy: try again as Retry-After says", False, True),
}
# the scan answers a browser with a page when a sticker is bad: 404 unknown code, 410 revoked
# (API clients get the problem document, and a revoked sticker is a 404 to them), 422 malformed
SCAN_PAGES = {
    "404": ("No shop has this code: a page saying the sticker is not valid", True),
    "410": ("The sticker has been revoked: a page saying so (API clients get a 404)", False),
    "422": ("This is not a sticker's code: a page saying so", True),
}


def _content(
    media_type: str, schema: Schema | Reference | RawSchema
) -> dict[str, OpenAPIMediaType]:
    return {media_type: OpenAPIMediaType(schema=schema)}  # type: ignore[arg-type]


def _limits(operation: Operation, content: dict[str, OpenAPIMediaType]) -> None:
    assert operation.responses is not None
    for status, (description, needs_body, retry) in LIMITS.items():
        if needs_body and operation.request_body is None:
            continue
        operation.responses.setdefault(
            status,
            OpenAPIResponse(
                description=description,
                content=content,
                headers={"Retry-After": RETRY_AFTER} if retry else None,
            ),
        )


def _scan_pages(operation: Operation, problem: dict[str, OpenAPIMediaType]) -> None:
    assert operation.responses is not None
    page = _content("text/html", Schema(type=OpenAPIType.STRING))
    for status, (description, as_json) in SCAN_PAGES.items():
        operation.responses[status] = OpenAPIResponse(
            description=description, content={**page, **problem} if as_json else page
        )


def document_problems(app: Litestar) -> None:
    """Every operation's 4xx answers described as problem details (see the module's doc), and
    the statuses the service's limits answer (LIMITS) listed one by one."""
    document = app.openapi_schema
    if document.components.schemas is None:  # pragma: no cover - Litestar always makes it
        document.components.schemas = {}
    document.components.schemas["Problem"] = RawSchema(json_schema(Problem))  # type: ignore[assignment]
    problem_content = _content("application/problem+json", Reference(ref="#/components/schemas/Problem"))
    problem = OpenAPIResponse(
        description="Refused: a problem document (RFC 9457); `errors` names the field at fault",
        content=problem_content,
    )
    open311_errors = _content(
        "application/json",
        Schema(type=OpenAPIType.ARRAY, items=Reference(ref="#/components/schemas/Open311Error")),
    )
    for path, item in (document.paths or {}).items():
        for method in METHODS:
            operation: Operation | None = getattr(item, method, None)
            if operation is None or operation.responses is None:
                continue
            if path.startswith(OWN_ERRORS):
                _limits(operation, open311_errors)
                continue
            operation.responses.pop("400", None)
            operation.responses["4XX"] = problem
            _limits(operation, problem_content)
            if path.startswith(DOCUMENT_PAGES):  # Litestar's own pages: its 404 is a page
                page = _content("text/html", Schema(type=OpenAPIType.STRING))
                operation.responses["404"] = OpenAPIResponse(description="No such document", content=page)
            if path == "/s/{code}":
                _scan_pages(operation, problem_content)
