"""create_app(settings): the one place where routes, dependencies and errors are put together."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.template.config import TemplateConfig
from litestar.types import ControllerRouterHandler

from merchant_code import __version__, db, migrate
from merchant_code.errors import StartupError, problem_handlers
from merchant_code.routes import health, scan
from merchant_code.scheduler import registered_jobs, start_scheduler
from merchant_code.settings import Settings

# The explicit route list: nothing else imports merchant_code.routes.
ROUTES: list[ControllerRouterHandler] = [
    health.healthz,
    health.readyz,
    scan.scan,
]

TEMPLATES = Path(__file__).resolve().parent / "templates"


def create_app(settings: Settings) -> Litestar:
    if settings.database_url is None:
        raise StartupError("create_app needs settings.database_url (the CLI starts the database)")
    url = settings.database_url

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        app.state.pool = await db.create_pool(url, min_size=settings.pool_min, max_size=settings.pool_max)
        scheduler = start_scheduler(app.state, registered_jobs()) if settings.scheduler else None
        try:
            yield
        finally:
            if scheduler is not None:
                scheduler.shutdown(wait=False)
            await app.state.pool.close()

    logging.getLogger("merchant_code").setLevel(settings.log_level.upper())
    return Litestar(
        route_handlers=ROUTES,
        lifespan=[lifespan],
        dependencies={"conn": Provide(db.provide_db)},
        exception_handlers=problem_handlers,
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(title="merchant-code", version=__version__, path="/schema"),
        state=State({"settings": settings, "migrations": migrate.load()}),
        template_config=TemplateConfig(directory=TEMPLATES, engine=JinjaTemplateEngine),
        debug=False,
    )
