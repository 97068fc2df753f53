"""A real PostgreSQL for the whole session; a fresh database from a migrated template per test.

With MERCHANT_CODE_TEST_DATABASE_URL set (a URL whose role may CREATE DATABASE) that server is
used; otherwise the embedded one is started in a temporary folder and stopped at the end.
Under pytest-xdist (`-n N`) the workers share one embedded server in the run's temporary folder:
whichever worker comes first starts it, the wheel counts the workers using it and the last one to
finish stops it. Every database name carries the worker's pid, so workers never meet.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from merchant_code import migrate
from merchant_code.app import create_app
from merchant_code.embedded import embedded_postgres
from merchant_code.settings import Settings

_counter = itertools.count()


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("MERCHANT_CODE_TEST_DATABASE_URL")
    if external:
        yield external
        return
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # every worker's basetemp is a folder of the run's own (basetemp/popen-gwN)
        folder = tmp_path_factory.getbasetemp().parent / "pg"
    else:
        folder = tmp_path_factory.mktemp("pg")
    with embedded_postgres(folder / "data") as url:
        yield url


async def _admin(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for sql in statements:
            await conn.execute(sql)
    finally:
        await conn.close()


APP_ROLE = """
DO $$ BEGIN
    CREATE ROLE merchant_code_app NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$"""


@pytest.fixture(scope="session")
def template_db(server_url: str) -> Iterator[str]:
    """A database with every migration applied, copied for each test."""
    name = f"mc_template_{os.getpid()}"

    async def build() -> None:
        # roles belong to the whole server, which the xdist workers share: two workers' migration
        # 0006 would both see no app role and both create it (one then fails, and every test of
        # that worker with it); the role is made once here, whoever comes first
        await _admin(server_url, APP_ROLE)
        await _admin(server_url, f"DROP DATABASE IF EXISTS {name}", f"CREATE DATABASE {name}")
        conn = await asyncpg.connect(with_database(server_url, name))
        try:
            await migrate.migrate(conn)
        finally:
            await conn.close()

    asyncio.run(build())
    yield name
    asyncio.run(_admin(server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
def today() -> datetime.date:
    """The test's day, read as it starts, never at import: a long (or parallel) run may cross
    midnight, and the database's CURRENT_DATE would then be a day ahead of the test's."""
    return datetime.date.today()


@pytest.fixture
async def empty_db_url(server_url: str) -> AsyncIterator[str]:
    """A database with nothing in it, not even the migrations."""
    name = f"mc_empty_{os.getpid()}_{next(_counter)}"
    await _admin(server_url, f"CREATE DATABASE {name}")
    yield with_database(server_url, name)
    await _admin(server_url, f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
async def db_url(server_url: str, template_db: str) -> AsyncIterator[str]:
    """A fresh, migrated database of this test's own."""
    name = f"mc_test_{os.getpid()}_{next(_counter)}"
    await _admin(server_url, f"CREATE DATABASE {name} TEMPLATE {template_db}")
    yield with_database(server_url, name)
    await _admin(server_url, f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    from merchant_code import db

    connection = await db.connect(db_url)
    yield connection
    await connection.close()


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    # scans are not flood-limited here: the access matrix alone scans faster than a person would
    # (tests/test_flood.py checks the limit with its own settings)
    return Settings(
        database_url=db_url, scheduler=False, data_dir=str(tmp_path), scan_rate=0,
        scan_watermark_seconds=0.05,
    )


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[AsyncTestClient]:  # type: ignore[type-arg]
    async with AsyncTestClient(app=create_app(settings)) as test_client:
        yield test_client
