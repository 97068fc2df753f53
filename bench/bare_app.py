"""The baselines of bench/scan_bench.py: bare Litestar handlers served by granian like the service.

    BARE_DATABASE_URL=postgresql://... BARE_PAGE_BYTES=6000 \\
        .venv/bin/python bench/bare_app.py --port 8001 --workers 1

- `GET /bare/{id}`: one asyncpg primary-key fetch of a shop (pool made in the lifespan) rendered
  into a Jinja2 page padded with static markup to BARE_PAGE_BYTES bytes (the size of a real scan
  page). No middleware, no guards, no dependency injection, no cache: what the service's scan must
  at least match.
- `GET /plain`: a fixed short text; what a cached sticker image is held against.

Granian runs the factory `bare_app:create_app` as ASGI with the given worker count, the same way
`merchant-code serve` runs the service. BARE_POOL_MAX (default 10, the service's default
MERCHANT_CODE_POOL_MAX) is the pool size per worker.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import jinja2
from litestar import Litestar, MediaType, Response, get
from litestar.exceptions import NotFoundException

QUERY = "SELECT code, name, name_en, trade, address, status, opening_hours, phone FROM shop WHERE id = $1"

PAGE = """<!doctype html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ shop.name }} · 商户信息</title>
</head>
<body>
<main>
<h1>{{ shop.name }}</h1>
<p class="muted">{{ shop.name_en or '' }} · {{ shop.trade }} · {{ shop.status }}</p>
<section class="card">
<p>{{ shop.address }}</p>
<p>{{ shop.opening_hours or '' }} {{ shop.phone or '' }}</p>
<p>{{ shop.code }}</p>
</section>
@PAD@
</main>
</body>
</html>
"""

# static markup repeated to reach the target size (ASCII, so one character is one byte)
PAD_LINE = '<p class="pad">Static text standing in for the markup of the real page, sized to match.</p>\n'


def padded_template(env: jinja2.Environment, page_bytes: int, sample: dict[str, Any]) -> jinja2.Template:
    """The page with static padding so that rendering `sample` gives `page_bytes` bytes."""
    bare = len(env.from_string(PAGE.replace("@PAD@", "")).render(shop=sample).encode())
    missing = max(0, page_bytes - bare)
    pad = (PAD_LINE * (missing // len(PAD_LINE) + 1))[:missing]
    return env.from_string(PAGE.replace("@PAD@", pad))


def create_app() -> Litestar:
    url = os.environ["BARE_DATABASE_URL"]
    page_bytes = int(os.environ.get("BARE_PAGE_BYTES", "4096"))
    pool_max = int(os.environ.get("BARE_POOL_MAX", "10"))
    env = jinja2.Environment(autoescape=True)
    # filled in by the lifespan; read by the handler without any injection
    held: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=pool_max)
        try:
            sample = await pool.fetchrow(QUERY.replace("id = $1", "id = (SELECT min(id) FROM shop)"))
            held["pool"] = pool
            held["page"] = padded_template(env, page_bytes, dict(sample) if sample else {})
            yield
        finally:
            await pool.close()

    @get("/bare/{shop_id:int}")
    async def bare(shop_id: int) -> Response[str]:
        row = await held["pool"].fetchrow(QUERY, shop_id)
        if row is None:
            raise NotFoundException("no such shop")
        return Response(held["page"].render(shop=row), media_type=MediaType.HTML)

    @get("/plain", media_type=MediaType.TEXT, sync_to_thread=False)
    def plain() -> str:
        return "ok\n"

    return Litestar(route_handlers=[bare, plain], lifespan=[lifespan], openapi_config=None, debug=False)


def main() -> None:
    from granian import Granian
    from granian.constants import Interfaces
    from granian.log import LogLevels

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args()
    # the same server settings as merchant_code.commands.serve
    Granian(
        "bare_app:create_app",
        address=args.host,
        port=args.port,
        interface=Interfaces.ASGI,
        workers=args.workers,
        factory=True,
        log_level=LogLevels(args.log_level),
        workers_kill_timeout=10,
        working_dir=Path(__file__).resolve().parent,
    ).serve()


if __name__ == "__main__":
    main()
