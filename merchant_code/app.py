"""create_app(settings): the one place where routes, dependencies and errors are put together."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import mmap
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.routes import HTTPRoute
from litestar.template.config import TemplateConfig
from litestar.types import ControllerRouterHandler

from merchant_code import (
    __version__,
    access,
    bodies,
    body_guard,
    client_limits,
    db,
    db_health,
    decoding,
    genuine,
    load,
    migrate,
)
from merchant_code import qr as qr_keys
from merchant_code.errors import DomainError, StartupError, Unauthorized, problem_handlers
from merchant_code.flood import FloodGate
from merchant_code.profile_cache import ProfileCache, Watermark
from merchant_code.routes import (
    admin,
    auth,
    cases,
    claim,
    complaints,
    dashboard,
    feeds_quality,
    health,
    home,
    open311,
    policies,
    public,
    qr,
    records,
    scan,
    shops,
    webhooks,
)
from merchant_code.scheduler import (
    jobs_state,
    quiet_scheduler,
    registered_jobs,
    start_scheduler,
    stop_scheduler,
)
from merchant_code.secret import signing_key
from merchant_code.settings import Settings
from merchant_code.shared_buckets import SharedGate


def template_filters(tz: str) -> Callable[[JinjaTemplateEngine], None]:
    """Pages show times in the regulator's time zone (`{{ when | local('%Y-%m-%d %H:%M') }}`)."""
    zone = ZoneInfo(tz)

    def local(value: datetime.datetime | datetime.date | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
        if value is None:
            return ""
        if isinstance(value, datetime.datetime):
            value = value.astimezone(zone) if value.tzinfo else value
        return value.strftime(fmt)

    def install(engine: JinjaTemplateEngine) -> None:
        engine.engine.filters["local"] = local

    return install


# The explicit route list: nothing else imports merchant_code.routes.
ROUTES: list[ControllerRouterHandler] = [
    home.home_page,
    health.healthz,
    health.readyz,
    scan.scan,
    auth.api_login,
    auth.api_logout,
    auth.api_password,
    auth.api_me,
    auth.login_page,
    auth.login_submit,
    auth.logout_submit,
    auth.me_page,
    auth.password_submit,
    claim.api_claim,
    claim.claim_page,
    claim.claim_submit,
    shops.my_shops,
    shops.my_shop,
    shops.update_my_shop,
    shops.shops_in_area,
    shops.inspect_shop,
    admin.list_accounts,
    admin.list_audit,
    records.api_submit_licence,
    records.api_submit_staff,
    records.api_submit_honour,
    records.page_submit_licence,
    records.page_submit_staff,
    records.page_submit_honour,
    records.page_details,
    records.api_reply,
    records.page_reply,
    records.api_file_inspection,
    records.page_file_inspection,
    records.api_review,
    records.page_review,
    records.api_pending,
    records.api_due,
    policies.api_list_policies,
    policies.api_create_policy,
    policies.api_audience,
    policies.api_get_policy,
    policies.api_edit_policy,
    policies.api_cancel_policy,
    policies.api_correct_policy,
    policies.api_unread_csv,
    policies.api_inbox,
    policies.api_inbox_item,
    policies.inbox_page,
    policies.inbox_item_page,
    policies.manage_page,
    policies.manage_submit,
    policies.manage_policy_page,
    policies.manage_cancel,
    policies.manage_correct,
    complaints.api_complaint,
    complaints.complaint_page,
    complaints.complaint_submit,
    complaints.track,
    complaints.track_reopen,
    public.router,
    webhooks.api_list_webhooks,
    webhooks.api_subscribe,
    webhooks.api_unsubscribe,
    open311.discovery,
    open311.discovery_xml,
    open311.services,
    open311.services_xml,
    open311.service_definition,
    open311.create_request,
    open311.create_request_xml,
    open311.list_requests,
    open311.list_requests_xml,
    open311.get_request,
    open311.get_token,
    open311.other_document,
    dashboard.api_dashboard,
    dashboard.api_dashboard_csv,
    dashboard.dashboard_page,
    feeds_quality.api_feed_quality,
    feeds_quality.feed_quality_page,
    cases.api_list_cases,
    cases.api_open_case,
    cases.api_get_case,
    cases.api_transition,
    cases.api_merchant_cases,
    cases.api_merchant_reply,
    cases.api_routes,
    cases.api_set_route,
    cases.api_delete_route,
    cases.cases_page,
    cases.case_page,
    cases.case_transition_submit,
    cases.merchant_cases_page,
    cases.merchant_reply_submit,
    qr.sticker_svg,
    qr.sticker_png,
    qr.poster_svg,
    qr.key_set,
]

TEMPLATES = Path(__file__).resolve().parent / "templates"


async def _ensure_sticker_key(pool: Any, settings: Settings) -> None:
    """A signing key for stickers from the first start, so the published key set is never empty."""
    try:
        async with db.acquire(pool) as conn:
            await qr_keys.ensure_signing_key(conn, settings)
    except (OSError, DomainError) as exc:
        logging.getLogger("merchant_code").warning("no sticker signing key yet: %s", exc)


async def _close(pool: Any) -> None:
    """Close a pool, waiting a little for connections still out; then close them regardless, so
    that a stopping worker never outlasts granian's kill timeout."""
    try:
        await asyncio.wait_for(pool.close(), POOL_CLOSE_SECONDS)
    except TimeoutError:
        pool.terminate()


POOL_CLOSE_SECONDS = 2.0


def create_app(settings: Settings, shared_limits: mmap.mmap | None = None) -> Litestar:
    """`shared_limits`: the serve command's table of per-client buckets, shared by its workers;
    without one (tests, one process) each app keeps its own."""
    if settings.database_url is None:
        raise StartupError("create_app needs settings.database_url (the CLI starts the database)")
    url = settings.database_url

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        db_health.reset()
        role = await db.app_role(url)
        # a pool per kind of work, so that none can take the connections another needs: requests
        # (one each at most: writes and signed-in reads), scans, the public API and its searches,
        # the throttles counted beside a request, and background jobs; each with its own
        # statement_timeout, so that a runaway statement ends instead of holding its share
        least = settings.pool_min
        connect = settings.connect_seconds
        for name, size, seconds in (
            ("pool", settings.pool_max, settings.request_statement_seconds),
            ("scan_pool", settings.scan_pool_max, settings.scan_statement_seconds),
            ("search_pool", settings.search_concurrency, settings.search_statement_seconds),
            ("side_pool", settings.side_pool_max, settings.request_statement_seconds),
            ("jobs_pool", settings.jobs_pool_max, settings.jobs_statement_seconds),
            # the scan cache's watermark alone: a poll never queues behind busy scans, so a
            # poll that times out means the database does not answer, not that scans are many
            ("watch_pool", 1, settings.scan_statement_seconds),
        ):
            pool = await db.create_pool(
                url,
                min_size=min(least, size),
                max_size=size,
                role=role,
                statement_seconds=seconds,
                connect_timeout=connect,
            )
            setattr(app.state, name, pool)
        await _ensure_sticker_key(app.state.pool, settings)
        watermark = Watermark(app.state.profile_cache, app.state.watch_pool, settings.scan_watermark_seconds)
        await watermark.once()  # the key states are known before the first scan
        polling = asyncio.create_task(watermark.run(), name="scan-cache-watermark")
        scheduler = (
            start_scheduler(jobs_state(app.state.jobs_pool, settings), registered_jobs())
            if settings.scheduler
            else None
        )
        load.watch(app.state)  # background jobs yield to this app's requests
        try:
            yield
        finally:
            load.unwatch(app.state)
            polling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await polling
            if scheduler is not None:
                await stop_scheduler(scheduler)
            pools = ("pool", "scan_pool", "search_pool", "side_pool", "jobs_pool", "watch_pool")
            await asyncio.gather(*(_close(getattr(app.state, name)) for name in pools))

    logging.getLogger("merchant_code").setLevel(settings.log_level.upper())
    quiet_scheduler(settings.log_level)
    # one line per feed request is noise; the feed runner logs each run instead
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger("merchant_code").level))
    db_health.quiet_pool_floor()  # the database's outage in one line, not a traceback per reconnect
    app = Litestar(
        route_handlers=ROUTES,
        lifespan=[lifespan],
        # the body first: nothing is taken from the pools while a client is still sending
        middleware=[body_guard.BodyGuard(), access.IdentityMiddleware()],
        before_send=[access.add_request_id],
        dependencies={
            "conn": Provide(db.provide_db),
            "principal": Provide(access.provide_principal, sync_to_thread=False),
        },
        exception_handlers={**problem_handlers, Unauthorized: access.login_redirect},
        request_max_body_size=settings.max_body_bytes,
        request_class=decoding.JSONRequest,
        openapi_config=OpenAPIConfig(
            title="merchant-code",
            version=__version__,
            path="/schema",
            # the API description is public, like the API's public routes
            openapi_router=Router(path="/schema", route_handlers=[], opt={"access": "public"}),
            components=Components(
                security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT")}
            ),
        ),
        state=State(
            {
                "settings": settings,
                "trusted_proxies": settings.trusted_proxy_set,
                "migrations": migrate.load(),
                "signing_key": signing_key(settings),
                "profile_cache": ProfileCache(settings.scan_cache_entries, settings.base_url),
                "write_slots": asyncio.Semaphore(settings.write_concurrency),
                "search_slots": asyncio.Semaphore(settings.search_concurrency),
                "sticker_checker": genuine.Checker(settings.base_url),
                "flood_gate": _scan_gate(settings, shared_limits),
                "public_gate": _public_gate(shared_limits),
            }
        ),
        template_config=TemplateConfig(
            directory=TEMPLATES,
            engine=JinjaTemplateEngine,
            engine_callback=template_filters(settings.timezone),
        ),
        debug=False,
    )
    access.check_routes(app)
    bodies.document_problems(app)
    _allow_every_method(app)
    return app


def _scan_gate(settings: Settings, shared: mmap.mmap | None) -> FloodGate | SharedGate | None:
    if not settings.scan_rate:
        return None
    if shared is not None:
        return SharedGate(shared, b"scan", settings.scan_rate, settings.scan_burst)
    return FloodGate(settings.scan_rate, settings.scan_burst)


def _public_gate(shared: mmap.mmap | None) -> FloodGate | SharedGate:
    rate, burst = client_limits.PUBLIC_RATE / client_limits.WINDOW, client_limits.PUBLIC_RATE
    return SharedGate(shared, b"public", rate, burst) if shared is not None else FloodGate(rate, burst)


def _allow_every_method(app: Litestar) -> None:
    """Litestar's automatic OPTIONS answer keeps, in its closure, the route as it stood when the
    path's first handler was registered: `Allow` then lists only that handler's methods (GET, not
    the POST of the same path). Point it at the route that serves the path."""
    for route in app.routes:
        handler = route.route_handler_map.get("OPTIONS") if isinstance(route, HTTPRoute) else None
        if handler is None or handler[0].fn.__name__ != "options_handler":
            continue
        closure = handler[0].fn.__closure__
        if closure and isinstance(closure[0].cell_contents, HTTPRoute):
            closure[0].cell_contents = route
