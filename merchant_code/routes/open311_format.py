"""Open311 GeoReport v2's two formats, chosen by the document's extension (`services.xml`,
`requests/SR-....json`): XML, the spec's required baseline, and JSON.

XML is written the way the spec's examples write it: no namespace, the XML declaration with
utf-8, a list as a container of one element per item (`<services><service>`,
`<service_requests><request>`, `<errors><error>`, `<endpoints><endpoint>`,
`<formats><format>`...), true/false for booleans and an empty element for null; JSON is the same
tree by the spec's Spark convention. It is sent as `text/xml; charset=utf-8`, the type the spec
names (and the one its discovery documents list), with the charset always given, so the old
US-ASCII default of text/* never applies.

The service only writes XML, never reads it: no parser, so no entity expansion to guard against.
Every text is escaped, and the characters XML 1.0 cannot carry at all (control characters, lone
surrogates, U+FFFE/U+FFFF) become U+FFFD, so no stored text can break or inject into a document.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal
from xml.sax.saxutils import escape

import msgspec
from litestar import Request, Response
from litestar.background_tasks import BackgroundTask
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Operation, Schema

from merchant_code.errors import InvalidInput

Format = Literal["json", "xml"]
XML_MEDIA = "text/xml"  # Litestar adds "; charset=utf-8" to a text/* type
JSON_MEDIA = "application/json"
MEDIA_TYPES = ["text/xml", "application/json"]  # what discovery lists for the endpoint

# a list element -> the element of each of its items (the spec's examples)
ITEMS = {
    "services": "service",
    "service_requests": "request",
    "errors": "error",
    "attributes": "attribute",
    "values": "value",
    "endpoints": "endpoint",
    "formats": "format",
}
XML_NOTE = "the same document in XML (a list is a container element with one element per item)"
NAME = re.compile(r"^[a-z_]+$")
NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def split_format(file: str) -> tuple[str, Format]:
    """`NAME.json` or `NAME.xml` -> (NAME, format); anything else is a 400 naming `format`."""
    stem, dot, ext = file.rpartition(".")
    if not dot or not stem:
        raise InvalidInput("format", "end the path in .xml or .json")
    ext = ext.lower()
    if ext not in ("json", "xml"):
        raise InvalidInput("format", f"{ext!r} is not offered: end the path in .xml or .json")
    return stem, "xml" if ext == "xml" else "json"


def format_of(request: Request[Any, Any, Any]) -> Format:
    """The format an answer (an error too) is due in: XML for a path ending in .xml."""
    return "xml" if request.url.path.lower().endswith(".xml") else "json"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return escape(NOT_XML.sub("\ufffd", str(value)))


def _element(name: str, value: Any, out: list[str]) -> None:
    assert NAME.match(name), name  # element names are this module's and the structs' field names
    if value is None:
        out.append(f"<{name}/>")
    elif isinstance(value, list):
        out.append(f"<{name}>")
        for item in value:
            _element(ITEMS[name], item, out)
        out.append(f"</{name}>")
    elif isinstance(value, dict):
        out.append(f"<{name}>")
        for key, item in value.items():
            _element(key, item, out)
        out.append(f"</{name}>")
    else:
        out.append(f"<{name}>{_text(value)}</{name}>")


def to_xml(root: str, payload: Any) -> bytes:
    out = ['<?xml version="1.0" encoding="utf-8"?>\n']
    _element(root, msgspec.to_builtins(payload), out)
    out.append("\n")
    return "".join(out).encode()


def respond(
    fmt: Format,
    root: str,
    payload: Any,
    status: int = 200,
    background: BackgroundTask | None = None,
) -> Response[Any]:
    """`payload` (structs) as the document `root` in the format asked for."""
    if fmt == "xml":
        return Response(
            to_xml(root, payload), status_code=status, media_type=XML_MEDIA, background=background
        )
    return Response(payload, status_code=status, media_type=JSON_MEDIA, background=background)


@dataclass
class InBothFormats(Operation):
    """An operation whose document is asked for as `.xml` or `.json` in its path parameter: every
    answer the document describes in JSON may come as XML as well."""

    def __post_init__(self) -> None:
        for response in (self.responses or {}).values():
            if isinstance(response, OpenAPIResponse) and response.content and JSON_MEDIA in response.content:
                xml = OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING, description=XML_NOTE))
                response.content = {**response.content, "text/xml": xml}
