"""The OpenAPI document lists every status an operation can answer, with what comes with it: the
limits' 408 and 413 (operations that read a body), 429 and 503 with Retry-After (all of them),
in the operation's error format; and the scan's pages for a bad sticker. What the service really
answers to a body too large and to a bad sticker is what the document says."""

from __future__ import annotations

from typing import Any

import asyncpg
from litestar.testing import AsyncTestClient

from merchant_code.app import create_app
from merchant_code.settings import Settings

PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
OPEN311_ERRORS = {  # Open311 answers its own error list
    "application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Open311Error"}}}
}


def operations(settings: Settings) -> list[tuple[str, str, dict[str, Any]]]:
    document = create_app(settings).openapi_schema.to_schema()
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def test_every_operation_lists_the_limits_statuses_in_its_error_format(settings: Settings) -> None:
    missing = []
    for method, path, operation in operations(settings):
        responses = operation["responses"]
        wanted = ["429", "503"] + (["408", "413"] if "requestBody" in operation else [])
        content = OPEN311_ERRORS if path.startswith("/open311/") else PROBLEM
        for status in wanted:
            entry = responses.get(status)
            if entry is None or entry.get("content") != content:
                missing.append((method, path, status))
            elif status in ("429", "503") and "Retry-After" not in entry.get("headers", {}):
                missing.append((method, path, status + " without Retry-After"))
    assert missing == []


def test_the_scan_lists_the_pages_it_answers_a_browser_for_a_bad_sticker(settings: Settings) -> None:
    (scan,) = [op for method, path, op in operations(settings) if (method, path) == ("get", "/s/{code}")]
    assert {s: set(scan["responses"][s]["content"]) for s in ("404", "410", "422")} == {
        "404": {"text/html", "application/problem+json"},
        "410": {"text/html"},
        "422": {"text/html", "application/problem+json"},
    }


async def test_a_body_too_large_and_a_malformed_sticker_answer_what_the_document_says(
    client: AsyncTestClient[Any], conn: asyncpg.Connection, settings: Settings
) -> None:
    documented = {(method, path): op["responses"] for method, path, op in operations(settings)}
    big = b'{"login":"' + b"x" * settings.max_body_bytes + b'"}'
    response = await client.post(
        "/api/v1/auth/login", content=big, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.headers["content-type"] in documented[("post", "/api/v1/auth/login")]["413"]["content"]
    page = await client.get("/s/NOT-A-CODE", headers={"accept": "text/html"})
    assert page.status_code == 422
    assert page.headers["content-type"].split(";")[0] in documented[("get", "/s/{code}")]["422"]["content"]


async def test_options_allows_every_method_a_path_serves(client: AsyncTestClient[Any]) -> None:
    # found over HTTP by Schemathesis: Litestar listed only the methods of a path's first handler
    allowed = {}
    for path in ("/api/v1/cases", "/api/v1/manage/routes", "/api/v1/merchant/shops/A"):
        response = await client.options(path)
        allowed[path] = response.headers.get("allow")
    assert allowed == {
        "/api/v1/cases": "GET, OPTIONS, POST",
        "/api/v1/manage/routes": "GET, OPTIONS, PUT",
        "/api/v1/merchant/shops/A": "GET, OPTIONS, PATCH",
    }
