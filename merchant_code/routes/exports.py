"""Open data exports through the public API (mounted on its router, so its rate limit applies):
ask for an area's export, follow its status, download the file once the job has written it.
"""

from __future__ import annotations

import datetime
import uuid
from pathlib import Path
from typing import Annotated, Any

import asyncpg
import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from litestar.response import File

from merchant_code import exports
from merchant_code.errors import Conflict, Gone, NotFound


class ExportIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    area_code: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{6,15}$", examples=["310199"])]
    format: exports.Format


class ExportOut(msgspec.Struct, frozen=True):
    id: str
    area_code: str
    format: str
    status: str
    status_url: str
    download_url: str
    requested_at: datetime.datetime
    finished_at: datetime.datetime | None
    filename: str | None
    size: int | None
    sha256: str | None
    rows: dict[str, int] | None


def _out(export: exports.Export, base: str) -> ExportOut:
    url = f"{base}/api/v1/exports/{export.id}"
    ready = export.status == "ready"
    return ExportOut(
        id=str(export.id),
        area_code=export.area_code,
        format=export.format,
        status=export.status,
        status_url=url,
        download_url=f"{url}/download",
        requested_at=export.requested_at,
        finished_at=export.finished_at,
        filename=export.filename if ready else None,
        size=export.size,
        sha256=export.sha256,
        rows=export.rows,
    )


async def _find(conn: asyncpg.Connection, export_id: str) -> exports.Export:
    try:
        key = uuid.UUID(export_id)
    except ValueError:
        raise NotFound("no export has this id") from None
    export = await exports.get_export(conn, key)
    if export is None:
        raise NotFound("no export has this id")
    return export


@post("/exports", opt={"access": "public"}, tags=["public"], status_code=202)
async def request_export(
    state: State, conn: NamedDependency[asyncpg.Connection], data: JSONBody[ExportIn]
) -> Response[ExportOut]:
    """Ask for the open data of an area and every area below it: `format` `lives` (a zip of the
    LIVES CSV files: businesses keyed by USCC, inspections, violations, feed info) or `jsonl` (gzipped
    JSON Lines, one shop a line: its public fields and citizen profile). 202 with the status URL
    while the job writes it (one export of an area and format at a time, however many ask); 200
    when one at most a day old is ready."""
    export = await exports.request_export(conn, data.area_code, data.format)
    body = _out(export, state.settings.base_url)
    status = 200 if export.status == "ready" else 202
    return Response(body, status_code=status, headers={"Location": body.status_url})


@get("/exports/{export_id:str}", opt={"access": "public"}, tags=["public"])
async def export_status(
    state: State, conn: NamedDependency[asyncpg.Connection], export_id: FromPath[str]
) -> Response[ExportOut]:
    """An export's status: pending, running, ready (with size, SHA-256 and rows per file) or failed
    (ask again for a new one)."""
    export = await _find(conn, export_id)
    headers = {"Cache-Control": "no-cache"}
    if export.status in ("pending", "running"):
        headers["Retry-After"] = str(exports.RETRY_AFTER)
    return Response(_out(export, state.settings.base_url), headers=headers)


@get("/exports/{export_id:str}/download", opt={"access": "public"}, tags=["public"])
async def download_export(
    request: Request[Any, Any, Any],
    state: State,
    conn: NamedDependency[asyncpg.Connection],
    export_id: FromPath[str],
) -> Response[bytes] | File:
    """The export's file, streamed, with its SHA-256 as a strong ETag (304 on If-None-Match); 409
    with Retry-After until it is ready; 410 once a newer export has replaced it for a week."""
    export = await _find(conn, export_id)
    if export.status == "failed":
        raise Conflict("this export failed; ask for a new one")
    if export.status == "expired":
        raise Gone("a newer export of this area has replaced this one and its file is deleted; ask again")
    if export.status != "ready" or export.path is None or export.sha256 is None:
        raise Conflict("this export is not ready yet", retry_after=exports.RETRY_AFTER)
    path = Path(state.settings.data_dir) / export.path
    if not path.is_file():
        raise NotFound("the file of this export is gone; ask for a new one")
    etag = f'"{export.sha256}"'
    headers = {"ETag": etag, "Cache-Control": "public, max-age=86400"}
    if _matches(request.headers.get("if-none-match"), etag):
        return Response(b"", status_code=304, headers=headers)
    return File(
        path,
        filename=export.filename,
        media_type=exports.MEDIA_TYPES[export.format],
        content_disposition_type="attachment",
        headers=headers,
    )


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags
