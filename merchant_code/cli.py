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
from typing import Any

from merchant_code import commands
from merchant_code.embedded import embedded_postgres
from merchant_code.errors import BadArgument, DomainError, StartupError
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
        if name == "demo":
            p.add_argument(
                "--info",
                action="store_true",
                help="print a running demo's scan pages, logins and a fresh claim code again",
            )
    sub.add_parser("migrate", help="apply pending migrations and exit")
    backup = sub.add_parser(
        "backup", help="pg_dump of one snapshot (consistent while writes go on) and a manifest"
    )
    backup.add_argument(
        "--out", metavar="FILE", required=True, help="file to write (custom format); FILE.manifest.json too"
    )
    backup.add_argument("--no-checksums", action="store_true", help="row counts only (checksums read it all)")
    restore = sub.add_parser("restore", help="restore a backup into an empty database, verify it")
    restore.add_argument("--from", dest="source", metavar="FILE", required=True, help="the backup")
    restore.add_argument("--into", metavar="URL", help="the empty target database (default: the configured)")
    seed = sub.add_parser("seed", help="generate a synthetic district into the database")
    seed.add_argument("--shops", type=int, default=2000, help="number of shops (default 2000)")
    seed.add_argument("--seed", type=int, default=2026, help="random seed (default 2026)")

    account = sub.add_parser("account", help="create, disable or reset the password of an account")
    acc = account.add_subparsers(dest="action", required=True)
    create = acc.add_parser("create", help="create an account; prints its password unless --password-stdin")
    create.add_argument("login")
    create.add_argument("--role", required=True, choices=["merchant", "inspector", "manager", "admin"])
    create.add_argument("--area", help="area code (inspector and manager: the scope of their work)")
    create.add_argument("--shop", action="append", default=[], help="shop code a merchant owns (repeatable)")
    create.add_argument("--name", help="display name")
    create.add_argument("--permission", action="append", default=[], help="extra permission: pii:read")
    create.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    disable = acc.add_parser("disable", help="disable an account and end its sessions")
    disable.add_argument("login")
    reset = acc.add_parser("reset-password", help="set a new password and end every session")
    reset.add_argument("login")
    reset.add_argument("--password-stdin", action="store_true", help="read the password from stdin")

    feeds = sub.add_parser("feeds", help="outside sources: add, run now, status, disable, enable, remove")
    feeds_sub = feeds.add_subparsers(dest="action", required=True)
    add = feeds_sub.add_parser("add", help="add or change a source")
    add.add_argument("name")
    add.add_argument(
        "--kind", required=True, choices=["lives", "fhrs", "licence_registry", "review_platform", "rss"]
    )
    add.add_argument("--url", required=True)
    add.add_argument("--interval", type=int, default=3600, help="seconds between pulls (at least 60)")
    add.add_argument(
        "--config", default="{}", help="the source's options as JSON, e.g. '{\"page_size\": 500}'"
    )
    add.add_argument("--allow-private", action="store_true", help="allow a loopback or private address")
    run = feeds_sub.add_parser("run", help="pull one source (or every enabled one) now")
    run.add_argument("source", nargs="?")
    status = feeds_sub.add_parser(
        "status", help="each source's last run, counts, lag and rejects: one line per source and per failure"
    )
    status.add_argument("source", nargs="?", help="only this source")
    status.add_argument(
        "--verbose", action="store_true", help="also the last runs and the quarantine by reason, with samples"
    )
    quality = feeds_sub.add_parser(
        "quality", help="each source's data-quality report (a failing one raises a case for its owner)"
    )
    quality.add_argument("source", nargs="?")
    for action, text in (
        ("disable", "stop pulling a source (kept, with its history; `enable` resumes it)"),
        ("enable", "pull a disabled source again"),
        ("remove", "delete a source with its runs, quarantine and mapping (the records it brought stay)"),
    ):
        feeds_sub.add_parser(action, help=text).add_argument("source")
    _feed_map_parsers(feeds_sub)

    channels = sub.add_parser(
        "channels", help="outbound channels of policy pushes (SMS or messaging gateways)"
    )
    channels_sub = channels.add_subparsers(dest="action", required=True)
    ch_add = channels_sub.add_parser(
        "add", help="add or change a channel: every delivery is POSTed there too"
    )
    ch_add.add_argument("name")
    ch_add.add_argument("--url", required=True)
    ch_add.add_argument("--secret-stdin", action="store_true", help="read an HMAC secret from stdin")
    ch_add.add_argument("--allow-private", action="store_true", help="allow a loopback or private address")
    ch_add.add_argument("--disable", action="store_true", help="keep the channel but send nothing to it")
    channels_sub.add_parser("list", help="the channels and what waits or failed in each")

    open311 = sub.add_parser("open311", help="Open311 GeoReport v2: API keys of the apps filing complaints")
    open311_sub = open311.add_subparsers(dest="what", required=True)
    o311_key = open311_sub.add_parser("key", help="create, disable or list API keys")
    o311_key_sub = o311_key.add_subparsers(dest="action", required=True)
    o311_create = o311_key_sub.add_parser("create", help="a new key: printed once, only its hash is kept")
    o311_create.add_argument("name")
    o311_disable = o311_key_sub.add_parser("disable", help="disable a key: its app can file no more requests")
    o311_disable.add_argument("name")
    o311_key_sub.add_parser("list", help="the keys, enabled and disabled")

    prof = sub.add_parser("profiles", help="shop profiles")
    prof.add_argument("action", choices=["rebuild"], help="rebuild: every shop's profile, now")

    _audit_parser(sub)

    shop = sub.add_parser("shop", help="shop administration")
    shop_sub = shop.add_subparsers(dest="action", required=True)
    claim = shop_sub.add_parser("claim-code", help="issue a new one-time claim code for a shop's QR letter")
    claim.add_argument("code")
    _qr_parser(sub)
    return parser


def _feed_map_parsers(feeds_sub: Any) -> None:
    mapping = feeds_sub.add_parser(
        "map", help="map a source's business id to a shop by hand (audited); many at once with --csv"
    )
    mapping.add_argument("source")
    mapping.add_argument("external_id", nargs="?", help="the business id the source gives")
    mapping.add_argument("shop_code", nargs="?", help="the shop's code")
    mapping.add_argument(
        "--csv", metavar="FILE", help="columns external_id,shop_code with a header; all or nothing"
    )
    unmatched = feeds_sub.add_parser(
        "unmatched", help="businesses waiting in quarantine for a shop, each with the shop most like it"
    )
    unmatched.add_argument("source")
    unmatched.add_argument("--limit", type=int, default=50, help="list at most this many (default 50)")


def _audit_parser(sub: Any) -> None:
    audit = sub.add_parser("audit", help="check the audit trail; sign and export checkpoints of its head")
    audit_sub = audit.add_subparsers(dest="action", required=True)
    verify = audit_sub.add_parser(
        "verify",
        help="seal what has committed, recompute the hash chain, hold it to every signed checkpoint;"
        " exit 1 naming a break",
    )
    verify.add_argument("--checkpoints", metavar="FILE", help="also hold it to an exported checkpoint file")
    audit_sub.add_parser(
        "checkpoint", help="seal, then sign the chain's head now (the service does it every 5 minutes)"
    )
    export = audit_sub.add_parser(
        "export-checkpoints", help="write every checkpoint and the keys that signed them, to keep elsewhere"
    )
    export.add_argument("--out", metavar="FILE", required=True, help="file to write (JSON)")


def _qr_parser(sub: Any) -> None:
    qr = sub.add_parser("qr", help="signed QR stickers: verify, keys, revoked codes, batch sheets")
    qr_sub = qr.add_subparsers(dest="action", required=True)
    verify = qr_sub.add_parser("verify", help="check a scanned sticker payload; exit 1 naming the reason")
    verify.add_argument("payload")
    verify.add_argument("--keyset", help="verify offline against this key set JSON (no database)")
    keys = qr_sub.add_parser("keys", help="rotate or revoke the keys that sign stickers")
    keys_sub = keys.add_subparsers(dest="key_action", required=True)
    keys_sub.add_parser("rotate", help="a new signing key; earlier keys are retired but still verify")
    revoke = keys_sub.add_parser("revoke", help="revoke a key: its stickers verify no more")
    revoke.add_argument("kid")
    code = qr_sub.add_parser("revoke-code", help="revoke a shop code: its stickers verify no more")
    code.add_argument("code")
    code.add_argument("--reason", required=True)
    sheet = qr_sub.add_parser("sheet", help="A4 sheets of stickers for every shop of an area and below")
    sheet.add_argument("--area", required=True, help="area code")
    sheet.add_argument("--out", required=True, help="file to write (a zip of A4 SVG pages)")


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
            "seed": lambda settings, url: commands.seed(settings, url, args.shops, args.seed),
            "account": lambda _, url: commands.account(url, args),
            "audit": lambda settings, url: commands.audit_trail(settings, url, args),
            "backup": lambda _, url: commands.backup(url, args),
            "restore": lambda _, url: commands.restore(url, args),
            "profiles": commands.rebuild_profiles,
            "feeds": lambda settings, url: commands.feeds(settings, url, args),
            "channels": lambda _, url: commands.channels(url, args),
            "open311": lambda _, url: commands.open311(url, args),
            "shop": lambda _, url: commands.claim_code(url, args.code),
            "qr": lambda settings, url: commands.qr(settings, url, args),
        }[args.command]
        if args.command == "qr" and getattr(args, "keyset", None):
            commands.qr_verify_offline(args.payload, args.keyset)
            return
        if args.command == "restore" and args.into:  # another server: start no embedded one
            commands.restore(args.into, args)
            return
        if args.command == "demo" and args.info:
            run = commands.demo_info
        elif args.command in {"serve", "demo"}:
            commands.ensure_port_free(settings.host, settings.port)
        adding = args.command in {"feeds", "channels"} and args.action == "add"
        if adding and (problem := commands.url_problem(args)):
            _fail(problem, 2)
        with database(settings) as url:
            run(settings, url)
    except (SettingsError, BadArgument) as exc:
        _fail(str(exc), 2)
    except (StartupError, MigrationError, DomainError) as exc:
        _fail(str(exc), 1)
    except KeyboardInterrupt:
        sys.exit(130)


def _fail(message: str, code: int) -> None:
    print(f"merchant-code: error: {message}", file=sys.stderr)
    sys.exit(code)
