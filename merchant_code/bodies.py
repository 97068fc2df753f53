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
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from litestar import Litestar
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Operation, Reference, RequestBody
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
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def document_problems(app: Litestar) -> None:
    """Every operation's 4xx answers described as problem details (see the module's doc)."""
    document = app.openapi_schema
    if document.components.schemas is None:  # pragma: no cover - Litestar always makes it
        document.components.schemas = {}
    document.components.schemas["Problem"] = RawSchema(json_schema(Problem))  # type: ignore[assignment]
    problem = OpenAPIResponse(
        description="Refused: a problem document (RFC 9457); `errors` names the field at fault",
        content={
            "application/problem+json": OpenAPIMediaType(schema=Reference(ref="#/components/schemas/Problem"))
        },
    )
    for path, item in (document.paths or {}).items():
        if path.startswith(OWN_ERRORS):
            continue
        for method in METHODS:
            operation: Operation | None = getattr(item, method, None)
            if operation is None or operation.responses is None:
                continue
            operation.responses.pop("400", None)
            operation.responses["4XX"] = problem
