"""Reading a write's body the same way whether it comes as JSON (API clients) or as a form with
an optional image (pages and phones): into a msgspec struct, errors naming the field."""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
from litestar import Request
from litestar.datastructures import UploadFile

from merchant_code import uploads
from merchant_code.errors import InvalidInput

T = TypeVar("T")


async def read(
    request: Request[Any, Any, Any], into: type[T], file_field: str | None = None, lists: tuple[str, ...] = ()
) -> tuple[T, bytes | None]:
    content_type = request.headers.get("content-type", "")
    data: bytes | None = None
    if content_type.startswith("application/json"):
        raw: Any = await request.json()
        if not isinstance(raw, dict):
            raise InvalidInput("body", "send a JSON object")
        fields = raw
    else:
        form = await request.form()
        fields = {}
        for key in form:
            values = form.getall(key)
            if key == file_field:
                upload = values[0]
                if isinstance(upload, UploadFile):
                    data = await upload.read(uploads.MAX_BYTES + 1) or None
                continue
            texts = [v for v in values if isinstance(v, str)]
            if key in lists:
                fields[key] = [t.strip() for t in texts if t.strip()]
            elif texts and texts[0].strip():
                fields[key] = texts[0].strip()  # an empty form field means "not given"
    try:
        return msgspec.convert(fields, into, strict=False), data
    except msgspec.ValidationError as exc:
        raise InvalidInput(field_of(str(exc)), str(exc)) from None


def field_of(message: str) -> str:
    if found := re.search(r"(?:unknown|missing required) field `([^`]+)`", message):
        return found.group(1)
    if found := re.search(r"at `\$\.([A-Za-z_]+)", message):
        return found.group(1)
    return "body"
