"""The request bodies of the writes that read their body themselves, in the OpenAPI document.

Those writes take JSON from API clients and a form from pages and phones (`forms.read`, with an
optional image or photo), so their handlers have no `data` parameter for Litestar to describe.
`body_of(Struct, ...)` gives the handler an `operation_class` that adds the body: the struct's
JSON Schema (from msgspec, the same struct the handler reads into) for `application/json`, and the
same fields, plus the file, for the form. API clients and Schemathesis then see what to send.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody
from litestar.openapi.spec.base import BaseSchemaObject

from merchant_code import uploads

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
