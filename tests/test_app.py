"""The app answers health checks and speaks RFC 9457 problem details for every error."""

from __future__ import annotations

from typing import Any

import asyncpg
from litestar import Litestar, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.testing import AsyncTestClient

from merchant_code import db
from merchant_code.app import create_app
from merchant_code.errors import problem_handlers


async def test_healthz_says_alive(client: AsyncTestClient[Any]) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "alive"}


async def test_readyz_is_ready_when_every_migration_is_applied(client: AsyncTestClient[Any]) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready" and body["migrations"] >= 5


async def test_readyz_is_unavailable_while_a_migration_is_missing(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    await conn.execute(
        "DELETE FROM schema_migration WHERE version = (SELECT max(version) FROM schema_migration)"
    )
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "is not applied" in response.json()["detail"]


async def test_an_unknown_path_is_a_problem_document(client: AsyncTestClient[Any]) -> None:
    response = await client.get("/no/such/page")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["status"] == 404
    assert response.json()["instance"] == "/no/such/page"


async def test_a_wrong_method_is_a_problem_document(client: AsyncTestClient[Any]) -> None:
    response = await client.post("/healthz")
    assert response.status_code == 405
    assert response.json()["status"] == 405


async def test_the_openapi_schema_is_served(client: AsyncTestClient[Any]) -> None:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    assert "/readyz" in response.json()["paths"]


async def test_an_unexpected_error_shows_no_stack_trace() -> None:
    @get("/boom", sync_to_thread=False)
    def boom() -> None:
        raise RuntimeError("secret internal detail")

    app = Litestar([boom], exception_handlers=problem_handlers)
    async with AsyncTestClient(app=app) as test_client:
        response = await test_client.get("/boom")
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "secret internal detail" not in response.text
    assert "Traceback" not in response.text


async def test_a_request_that_asks_its_own_pool_for_a_second_connection_is_refused_at_once(
    settings: Any,
) -> None:
    """Twelve such requests at once would hold every connection of a ten-connection pool while each
    waits for one more: the pool refuses the second at once, whatever dependencies the handler has
    (Litestar resolves two or more of them in child tasks)."""
    @post("/twice", opt={"access": "public"}, status_code=200)
    async def twice(
        state: State, conn: NamedDependency[asyncpg.Connection], principal: NamedDependency[Any]
    ) -> str:
        async with db.acquire(state.pool) as second:
            return str(await second.fetchval("SELECT 1"))

    @post("/side", opt={"access": "public"}, status_code=200)
    async def side(state: State, conn: NamedDependency[asyncpg.Connection]) -> str:
        async with db.acquire(state.side_pool) as other:  # another pool: allowed
            return str(await other.fetchval("SELECT 2"))

    app = create_app(settings)
    app.register(twice)
    app.register(side)
    async with AsyncTestClient(app=app) as client:
        refused = await client.post("/twice")
        allowed = await client.post("/side")
    assert refused.status_code == 500 and "Traceback" not in refused.text
    assert allowed.status_code == 200 and allowed.text == "2"
