"""Images people send (certificates, inspection and complaint photos): the type is read from
the bytes themselves, never from the name or the declared content type, and the size is capped."""

from __future__ import annotations

import hashlib

import asyncpg

from merchant_code import db
from merchant_code.errors import InvalidInput

MAX_BYTES = 5 * 1024 * 1024
# the request limit for routes that take a photo: the image plus the form around it
MAX_REQUEST_BYTES = MAX_BYTES + 64 * 1024


def sniff(data: bytes) -> str | None:
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def check(field: str, data: bytes) -> str:
    if len(data) > MAX_BYTES:
        raise InvalidInput(field, f"the image is larger than {MAX_BYTES // (1024 * 1024)} MB")
    kind = sniff(data)
    if kind is None:
        raise InvalidInput(field, "send a JPEG, PNG or WebP image")
    return kind


async def store(
    conn: asyncpg.Connection,
    *,
    field: str,
    data: bytes,
    shop_id: int | None,
    purpose: str,
    account_id: int | None,
) -> int:
    content_type = check(field, data)
    upload_id: int = await db.queries.create_upload(
        conn,
        shop_id=shop_id,
        purpose=purpose,
        content_type=content_type,
        size=len(data),
        sha256=hashlib.sha256(data).digest(),
        data=data,
        account_id=account_id,
    )
    return upload_id
