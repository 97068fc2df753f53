"""The `merchant-code` command: serve, migrate, demo, seed.

Every failure a person can cause (a bad setting, an unreachable database, a port in use, a
data folder that cannot be used, an edited migration) ends in one line and a non-zero exit.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from merchant_code import commands
from merchant_code.embedded import embedded_postgres
from merchant_code.errors import DomainError, StartupError
from merchant_code.migrate import MigrationError
from merchant_code.settings import Settings, SettingsError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="merchant-code", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, helptext in (
        ("serve", "run the HTTP server (and the scheduler)"),
        ("demo", "migrate, seed a demo district if empty, serve, print where to look"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--host", help="address to listen on (MERCHANT_CODE_HOST)")
        p.add_argument("--port", type=int, help="port to listen on (MERCHANT_CODE_PORT)")
        p.add_argument("--workers", type=int, help="worker processes (MERCHANT_CODE_WORKERS)")
    sub.add_parser("migrate", help="apply pending migrations and exit")
    seed = sub.add_parser("seed", help="generate a synthetic district into the database")
    seed.add_argument("--shops", type=int, default=2000, help="number of shops (default 2000)")
    seed.add_argument("--seed", type=int, default=2026, help="random seed (default 2026)")
    return parser


@contextmanager
def database(settings: Settings) -> Iterator[str]:
    """The configured server's URL, or an embedded server's for as long as the block runs."""
    if settings.database_url:
        yield settings.database_url
    else:
        with embedded_postgres(Path(settings.pg_data)) as url:
            yield url


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        overrides = {k: getattr(args, k, None) for k in ("host", "port", "workers")}
        settings = Settings.from_env(os.environ, **overrides)
        logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
        run: Callable[[Settings, str], None] = {
            "serve": commands.serve,
            "demo": commands.demo,
            "migrate": commands.migrate_only,
            "seed": lambda _, url: commands.seed(url, args.shops, args.seed),
        }[args.command]
        if args.command in {"serve", "demo"}:
            commands.ensure_port_free(settings.host, settings.port)
        with database(settings) as url:
            run(settings, url)
    except SettingsError as exc:
        _fail(str(exc), 2)
    except (StartupError, MigrationError, DomainError) as exc:
        _fail(str(exc), 1)
    except KeyboardInterrupt:
        sys.exit(130)


def _fail(message: str, code: int) -> None:
    print(f"merchant-code: error: {message}", file=sys.stderr)
    sys.exit(code)
