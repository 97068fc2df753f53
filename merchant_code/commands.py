"""What each CLI command does, once the database is there."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import errno
import os
import re
import socket
import subprocess
import sys
from typing import Any

import asyncpg
import msgspec

from merchant_code import accounts, audit, db, migrate, profiles, shared_buckets
from merchant_code import district as seeding
from merchant_code.errors import DomainError, NotFound, StartupError
from merchant_code.settings import PREFIX, Settings


def ensure_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(
                    f"port {port} on {host} is in use: stop the other process or pass --port"
                ) from None
            raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


async def _migrate(url: str) -> list[str]:
    conn = await db.connect(url)
    try:
        return await migrate.migrate(conn)
    finally:
        await conn.close()


def migrate_only(settings: Settings, url: str) -> None:
    names = asyncio.run(_migrate(url))
    print(f"applied {len(names)} migration(s)" + (": " + ", ".join(names) if names else ""))


def seed(settings: Settings, url: str, shops: int, seed: int) -> None:
    asyncio.run(_seed(url, shops, seed, settings.base_url))
    _print_logins(seed)


async def _seed(url: str, shops: int, seed: int, base: str) -> None:
    await _migrate(url)
    conn = await db.connect(url)
    try:
        summary = await seeding.seed_district(
            conn, shops=shops, seed=seed, today=datetime.date.today(), progress=print, base=base
        )
        size = await db.queries.get_database_size(conn)
    finally:
        await conn.close()
    print(
        f"seeded {summary.shops} shops, {summary.licences} licences, {summary.inspections} inspections,"
        f" {summary.violations} violations, {summary.reviews} reviews, {summary.staff} staff"
        f" in {summary.seconds:.1f} s, {summary.profiles} profiles in {summary.profile_seconds:.1f} s;"
        f" database size {size}"
    )


def serve(settings: Settings, url: str) -> None:
    # imported here: migrate and seed need no HTTP server
    from granian import Granian
    from granian.constants import Interfaces
    from granian.log import LogLevels

    _export(msgspec.structs.replace(settings, database_url=url))
    # one table of per-client buckets for every worker, so a client's rate holds whatever their
    # number; unlinked when serving stops (the resource tracker unlinks it if this is killed)
    table = shared_buckets.create()
    os.environ[shared_buckets.ENV] = table.name
    try:
        Granian(
            "merchant_code.asgi:app_from_env",
            address=settings.host,
            port=settings.port,
            interface=Interfaces.ASGI,
            workers=settings.workers,
            factory=True,
            log_level=LogLevels(settings.log_level),
            # a safety net only: a worker's stop is bounded well inside it (the jobs' grace and
            # the pools' close in app.py and scheduler.py), and Ctrl-C reaching a worker from the
            # terminal as well as from granian just starts the same stop twice
            workers_kill_timeout=10,
        ).serve()
    finally:
        os.environ.pop(shared_buckets.ENV, None)
        table.close()
        table.unlink()


# seconds after the demo starts when its LIVES publisher starts to drift
DEMO_DRIFT_SECONDS = 900


def demo(settings: Settings, url: str) -> None:
    from merchant_code import demo_info

    feed_provider, banner = asyncio.run(_prepare_demo(settings, url))
    demo_info.write_where(
        settings.data_dir, demo_info.Where(settings.base_url, feed_provider.base_url, os.getpid())
    )
    print(f"merchant-code demo is starting at {settings.base_url}; where to look follows once it answers")
    announcer = _announce_when_ready(settings, banner)
    try:
        serve(msgspec.structs.replace(settings, demo=True), url)
    finally:
        feed_provider.stop()
        announcer.terminate()
        announcer.wait()


def _announce_when_ready(settings: Settings, banner: list[str]) -> subprocess.Popen[bytes]:
    """Print the banner once /readyz answers, after granian's start-up lines, where it is seen.

    A process of its own, not a thread: granian forks its workers, and a fork taken while a thread
    holds a lock (an import, an HTTP connection) leaves the worker stuck on that lock for ever.
    """
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(settings.host, settings.host)  # noqa: S104
    ready = f"http://{f'[{host}]' if ':' in host else host}:{settings.port}/readyz"
    code = "from merchant_code.demo_info import announce; announce()"
    child = subprocess.Popen(
        [sys.executable, "-c", code, ready, str(os.getpid())], stdin=subprocess.PIPE
    )
    assert child.stdin is not None
    child.stdin.write("\n".join(banner).encode())
    child.stdin.close()
    return child


def demo_info(settings: Settings, url: str) -> None:
    """The banner of a running demo again, with a fresh claim code (the printed one may be used)."""
    from merchant_code import demo_info as info
    from merchant_code.embedded import alive

    where = info.read_where(settings.data_dir)
    if where is None:
        raise DomainError(
            f"no demo has run with the data folder {settings.data_dir}: start one with `merchant-code demo`"
        )
    base, feeds_url = where.base_url, where.feeds_url
    banner = asyncio.run(_with_conn(url, lambda conn: _banner(conn, settings, base, feeds_url)))
    print("\n".join(banner))
    if not alive(where.pid):
        print(f"(the demo that served {base} is not running now: `merchant-code demo` starts it)")


async def _prepare_demo(settings: Settings, url: str) -> tuple[Any, list[str]]:
    from merchant_code.feeds import provider as demo_feeds

    await _migrate(url)
    conn = await db.connect(url)
    try:
        if await db.queries.count_districts(conn) == 0:
            print(f"seeding a demo district of {settings.demo_shops} shops (once)...")
            await seeding.seed_district(
                conn,
                shops=settings.demo_shops,
                seed=settings.demo_seed,
                today=datetime.date.today(),
                base=settings.base_url,
            )
        # a local provider serving the district in the five feed formats, pulled by the scheduler
        # its LIVES publisher drifts after a while, so the quality report has something to show
        feed_provider = demo_feeds.start(
            await demo_feeds.load_shops(conn), settings.demo_seed, drift_after=DEMO_DRIFT_SECONDS
        )
        await demo_feeds.register(conn, demo_feeds.demo_sources(feed_provider.base_url))
        banner = await _banner(conn, settings, settings.base_url, feed_provider.base_url)
    finally:
        await conn.close()
    return feed_provider, banner


async def _banner(conn: asyncpg.Connection, settings: Settings, base: str, feeds_url: str) -> list[str]:
    """Where to look: scan pages, logins, a fresh claim code (the earlier one stops working), feeds."""
    from merchant_code import demo_info
    from merchant_code.feeds import provider as demo_feeds

    shops = await demo_info.shops(conn)
    owned = await db.queries.get_demo_merchant_shop(conn, login="merchant")
    claim = await db.queries.get_demo_claim_shop(conn)
    claim_code = await accounts.issue_claim_code(conn, claim["code"]) if claim else None
    sources = demo_feeds.demo_sources(feeds_url)
    out = [
        f"\nmerchant-code is ready at {base}  (Ctrl-C stops it and its database;"
        " `merchant-code demo --info` prints this again)",
        f"  ready check:   {base}/readyz      API schema: {base}/schema      this list: {base}/",
        "  scan pages (as a citizen would open the sticker):",
        *(f"    {base}/s/{shop.code}   {shop.name} ({shop.trade_name})" for shop in shops),
        *_login_lines(settings.demo_seed),
        f"  log in at {base}/login  (API: POST {base}/api/v1/auth/login)",
    ]
    if owned:
        code = owned["code"]
        out.append(
            f"  the demo merchant's shop, {owned['name']}: {base}/s/{code}"
            f"  (sticker {base}/s/{code}/sticker.svg, poster {base}/s/{code}/poster.svg)"
        )
        out.append(
            "    try: open it as a citizen; log in as merchant and add a licence; log in as inspector,"
            " verify it and file an inspection; open it again as a citizen"
        )
    if claim and claim_code:
        out.append(
            f"  claim a shop as its owner at {base}/claim: shop code {claim['code']} ({claim['name']}),"
            f" claim code {claim_code}, phone {claim['owner_phone']}  (fresh: any earlier code no longer"
            f" works; another with `merchant-code shop claim-code {claim['code']}`)"
        )
    out += [
        f"  policy pushes: log in as manager, open {base}/manage/policies and schedule a policy for"
        f" catering a minute ahead; at that minute the merchant's inbox ({base}/inbox) shows it",
        f"  feeds: a local provider at {feeds_url} serves the district as",
        "    " + ", ".join(f"{s.name} ({s.kind})" for s in sources),
        "    the scheduler pulls them; `merchant-code feeds status` shows each source's runs",
        f"  data quality: {base}/manage/feeds (manager) or `merchant-code feeds quality`; after"
        f" {DEMO_DRIFT_SECONDS // 60} minutes demo-lives renames a column and inverts its scores:"
        " its report fails and a data-quality case opens for the food safety division",
    ]
    return out


def _login_lines(seed: int) -> list[str]:
    return ["  demo logins:"] + [
        f"    {login.role:<10} {login.login} / {login.password}   {login.detail}"
        for login in seeding.demo_logins(seed)
    ]


def _print_logins(seed: int) -> None:
    print("\n".join(_login_lines(seed)))


def _export(settings: Settings) -> None:
    """Worker processes build their settings from the environment: hand them ours."""
    for name, value in msgspec.structs.asdict(settings).items():
        key = PREFIX + name.upper()
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = str(value).lower() if isinstance(value, bool) else str(value)


async def _with_conn(url: str, work: Any) -> Any:
    await _migrate(url)
    conn = await db.connect(url)
    try:
        return await work(conn)
    finally:
        await conn.close()


def _password_from_stdin(wanted: bool) -> str | None:
    if not wanted:
        return None
    line = sys.stdin.readline().rstrip("\n")
    return line or None


def account(url: str, args: argparse.Namespace) -> None:
    password = _password_from_stdin(getattr(args, "password_stdin", False))
    if args.action == "create":
        made = asyncio.run(
            _with_conn(
                url,
                lambda conn: accounts.create(
                    conn,
                    login=args.login,
                    role=args.role,
                    area=args.area,
                    shops=args.shop,
                    name=args.name,
                    permissions=args.permission,
                    password=password,
                ),
            )
        )
        where = f" in area {made.area_code}" if made.area_code else ""
        owns = f" owning {', '.join(made.shops)}" if made.shops else ""
        print(f"created {made.role} {made.login}{where}{owns}")
        if password is None:
            print(f"password: {made.password}")
    elif args.action == "disable":
        asyncio.run(_with_conn(url, lambda conn: accounts.disable(conn, args.login)))
        print(f"disabled {args.login}; its sessions have ended")
    else:
        new = asyncio.run(_with_conn(url, lambda conn: accounts.reset_password(conn, args.login, password)))
        print(f"password of {args.login} reset; its sessions have ended")
        if password is None:
            print(f"password: {new}")


def audit_trail(settings: Settings, url: str, args: argparse.Namespace) -> None:
    from merchant_code import audit_checkpoints as checkpoints

    if args.action == "checkpoint":
        made = asyncio.run(_with_conn(url, lambda conn: checkpoints.make(conn, settings)))
        if made is None:
            print("nothing to sign: the chain is empty or its head is signed already")
        else:
            print(f"checkpoint {made.id}: head row {made.head_id} signed with key {made.kid}")
    elif args.action == "export-checkpoints":
        data, count = asyncio.run(_with_conn(url, checkpoints.export))
        _write_out(args.out, data)
        print(f"wrote {args.out}: {count} checkpoint(s); keep it where the database's owner cannot write,"
              " and hold the chain to it with `merchant-code audit verify --checkpoints FILE`")  # fmt: skip
    else:
        audit_verify(url, args.checkpoints)


def audit_verify(url: str, exported_file: str | None = None) -> None:
    from merchant_code import audit_checkpoints as checkpoints

    exported = checkpoints.parse_export(_read_in(exported_file)) if exported_file else None

    async def sealed_then_verified(conn: Any) -> checkpoints.Report:
        # what the service's sealer would do within a second; with no service running, only this
        await audit.seal(conn)
        return await checkpoints.verify(conn, exported)

    report = asyncio.run(_with_conn(url, sealed_then_verified))
    if report.problems:
        raise DomainError("\n".join(report.problems))
    skipped = f" ({report.skipped} signed by a revoked key not relied on)" if report.skipped else ""
    print(
        f"audit chain intact: {report.checked} events;"
        f" {report.checkpoints} signed checkpoint(s) hold{skipped}"
    )
    if report.unsealed and report.oldest_unsealed is not None:
        age = (datetime.datetime.now(datetime.UTC) - report.oldest_unsealed).total_seconds()
        print(f"{report.unsealed} event(s) not sealed yet (in flight): the oldest written {age:.1f} s ago")


def backup(url: str, args: argparse.Namespace) -> None:
    from pathlib import Path

    from merchant_code import backup as backups

    done = asyncio.run(backups.backup(url, Path(args.out), checksums=not args.no_checksums))
    m = done.manifest
    print(
        f"wrote {done.path}: {m.dump_bytes / 2**20:.1f} MiB ({m.dump_bytes} bytes) in {done.seconds:.1f} s"
        f" from {m.database} (PostgreSQL {m.server_version}), one snapshot: consistent while writes go on"
    )
    what = "rows and checksums" if not args.no_checksums else "rows (no checksums)"
    print(f"manifest {done.manifest_path}: {len(m.tables)} tables, {what}:")
    for t in m.tables:
        print(f"  {t.table:<32} {t.rows:>10}" + (f"  {t.checksum}" if t.checksum else ""))


def restore(url: str, args: argparse.Namespace) -> None:
    from pathlib import Path

    from merchant_code import backup as backups

    done = asyncio.run(backups.restore(url, Path(args.source)))
    what = "row counts and checksums" if done.checksums else "row counts"
    print(f"restored {args.source} into {db.redact(url)} in {done.seconds:.1f} s")
    print(f"verified {done.tables} tables ({done.rows} rows; {what} match the manifest)")


def claim_code(url: str, code: str) -> None:
    new = asyncio.run(_with_conn(url, lambda conn: accounts.issue_claim_code(conn, code)))
    print(f"claim code for shop {code.upper()}: {new}  (one use; any earlier code no longer works)")


def rebuild_profiles(settings: Settings, url: str) -> None:
    total, seconds = asyncio.run(
        _with_conn(url, lambda conn: profiles.rebuild_all(conn, progress=print, base=settings.base_url))
    )
    print(f"rebuilt {total} profiles in {seconds:.1f} s")


def qr(settings: Settings, url: str, args: argparse.Namespace) -> None:
    from merchant_code import qr as signing
    from merchant_code import stickers

    if args.action == "verify":
        ok = asyncio.run(_with_conn(url, lambda conn: _verify_with(conn, args.payload)))
        print(f"OK: shop code {ok.code}, key {ok.kid} ({ok.key_status}), base {ok.base}")
    elif args.action == "keys" and args.key_action == "rotate":
        key, retired = asyncio.run(_with_conn(url, lambda conn: signing.rotate(conn, settings)))
        print(f"new signing key {key.kid}; retired (still verify): {', '.join(retired) or 'none'}")
    elif args.action == "keys":
        at = asyncio.run(_with_conn(url, lambda conn: signing.revoke_key(conn, args.kid)))
        print(f"revoked key {args.kid} at {at:%Y-%m-%d %H:%M:%S%z}: its stickers verify no more")
    elif args.action == "revoke-code":
        row = asyncio.run(_with_conn(url, lambda conn: signing.revoke_code(conn, args.code, args.reason)))
        print(f"revoked shop code {row.code} at {row.revoked_at:%Y-%m-%d %H:%M:%S%z}: {row.reason}")
    else:
        sheet = asyncio.run(_with_conn(url, lambda conn: stickers.area_sheet(conn, settings, args.area)))
        _write_out(args.out, sheet.data)
        how = "from the cache" if sheet.cached else f"{sheet.processes} processes"
        print(f"wrote {args.out}: {sheet.pages} pages, {sheet.shops} shops in {sheet.seconds:.1f} s ({how})")


async def _verify_with(conn: Any, payload: str) -> Any:
    from merchant_code import qr as signing

    return signing.verify(payload, await signing.load_keyset(conn))


def qr_verify_offline(payload: str, keyset_file: str) -> None:
    from pathlib import Path

    from merchant_code import qr as signing

    try:
        data = Path(keyset_file).read_bytes()
    except OSError as exc:
        raise DomainError(f"cannot read the key set {keyset_file}: {exc.strerror or exc}") from None
    ok = signing.verify(payload, signing.parse_keyset(data))
    print(f"OK: shop code {ok.code}, key {ok.kid} ({ok.key_status}), base {ok.base} (offline)")


def _read_in(path: str) -> bytes:
    from pathlib import Path

    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise DomainError(f"cannot read {path}: {exc.strerror or exc}") from None


def _write_out(path: str, data: bytes) -> None:
    from pathlib import Path

    try:
        Path(path).write_bytes(data)
    except OSError as exc:
        raise DomainError(f"cannot write {path}: {exc.strerror or exc}") from None


async def _console_audit(
    conn: Any, action: str, object_type: str, object_id: str, detail: dict[str, Any] | None = None
) -> None:
    """A change made at the console: audited with no actor, in the change's transaction. Actions
    are named `<object>.<command>` after the command that made them (channel.add, feed.add)."""
    await audit.append(
        conn, actor=None, action=action, object_type=object_type, object_id=object_id, detail=detail
    )


def url_problem(args: argparse.Namespace) -> str | None:
    """Why the --url of `feeds add` or `channels add` cannot be stored: not http(s), or (without
    --allow-private) a private or loopback address or a name answering one. Asked before the
    database starts: a refused URL is never stored, so never found out only when it is used."""
    import json

    from merchant_code.feeds import ssrf

    allow = bool(args.allow_private)
    if args.command == "feeds":
        try:
            config = json.loads(args.config)
        except json.JSONDecodeError:
            config = None  # said later, with the other --config mistakes
        allow = allow or (isinstance(config, dict) and bool(config.get("allow_private")))
    try:
        asyncio.run(ssrf.check_stored_url(args.url, allow))
    except ssrf.Refused as exc:
        hint = "; pass --allow-private if this is intended" if exc.private else ""
        return f"--url {args.url}: {exc}{hint}"
    return None


def channels(url: str, args: argparse.Namespace) -> None:
    asyncio.run(_channels(url, args))


async def _channels(url: str, args: argparse.Namespace) -> None:
    await _migrate(url)
    conn = await db.connect(url)
    try:
        if args.action == "add":
            if not re.match(r"^[a-z][a-z0-9_-]{0,31}$", args.name) or args.name == "inbox":
                raise DomainError("a channel's name is 1-32 lower-case letters, digits, - or _ (not inbox)")
            if not re.match(r"^https?://\S+$", args.url):
                raise DomainError("--url must be an http(s) URL")
            secret = sys.stdin.readline().strip() or None if args.secret_stdin else None
            async with conn.transaction():
                await db.queries.upsert_channel(
                    conn,
                    name=args.name,
                    url=args.url,
                    secret=secret,
                    allow_private=args.allow_private,
                    enabled=not args.disable,
                )
                detail = {"url": args.url, "signed": secret is not None, "enabled": not args.disable,
                          "allow_private": args.allow_private}  # fmt: skip
                await _console_audit(conn, "channel.add", "channel", args.name, detail)
            state = "disabled" if args.disable else "enabled"
            print(f"channel {args.name} ({state}) -> {args.url}{' signed' if secret else ''}")
            return
        rows = [r async for r in db.queries.list_channel_status(conn)]
        if not rows:
            print("no channels (merchant-code channels add NAME --url URL); deliveries go to inboxes only")
        for r in rows:
            state = "enabled" if r["enabled"] else "disabled"
            print(
                f"{r['name']:<16} {state:<8} {r['url']}  delivered {r['delivered']}, waiting {r['waiting']},"
                f" dead {r['dead']}{'  last error: ' + r['last_error'] if r['last_error'] else ''}"
            )
    finally:
        await conn.close()


def open311(url: str, args: argparse.Namespace) -> None:
    asyncio.run(_open311(url, args))


async def _open311(url: str, args: argparse.Namespace) -> None:
    from merchant_code.routes.open311 import hash_key, new_key

    await _migrate(url)
    conn = await db.connect(url)
    try:
        if args.action == "create":
            if not re.match(r"^[a-z0-9][a-z0-9_.-]{0,63}$", args.name):
                raise DomainError("an Open311 key's name is 1-64 lower-case letters, digits, ., - or _")
            key = new_key()
            async with conn.transaction():
                if await db.queries.create_open311_key(conn, name=args.name, key_hash=hash_key(key)) is None:
                    raise DomainError(
                        f"an Open311 key named {args.name} exists: disable it, create another name"
                    )
                await _console_audit(conn, "open311-key.create", "open311_key", args.name)
            print(f"open311 key {args.name}: {key}")
            print("shown once (only its hash is kept): the app sends it as api_key")
            return
        if args.action == "disable":
            async with conn.transaction():
                if not await db.queries.disable_open311_key(conn, name=args.name):
                    raise DomainError(f"no enabled Open311 key is named {args.name}")
                await _console_audit(conn, "open311-key.disable", "open311_key", args.name)
            print(f"open311 key {args.name} disabled")
            return
        rows = [r async for r in db.queries.list_open311_keys(conn)]
        if not rows:
            print("no Open311 keys (merchant-code open311 key create NAME)")
        for r in rows:
            state = "enabled" if r["disabled_at"] is None else f"disabled {r['disabled_at']:%Y-%m-%d}"
            print(f"{r['name']:<24} created {r['created_at']:%Y-%m-%d}  {state}")
    finally:
        await conn.close()


async def _change_source(conn: asyncpg.Connection, action: str, name: str) -> str:
    """Disable, enable or remove a source, audited. A pull already running goes on to its end (the
    scheduler's refresh then drops the jobs of sources no longer enabled); remove one that is not
    running."""
    async with conn.transaction():
        if action == "remove":
            found = await db.queries.delete_feed_source(conn, name=name)
            if found is not None:
                await db.queries.delete_feed_source_row(conn, id=found)
        else:
            found = await db.queries.set_feed_source_enabled(conn, name=name, enabled=action == "enable")
        if found is None:
            raise NotFound(f"no feed source is named {name!r} (see `merchant-code feeds status`)")
        await audit.append(
            conn, actor=None, action=f"feed.{action}", object_type="feed_source", object_id=name
        )
    return f"source {name}: {action}d"


def feeds(settings: Settings, url: str, args: argparse.Namespace) -> None:
    asyncio.run(_feeds(url, args))


async def _feeds(url: str, args: argparse.Namespace) -> None:
    import json

    from merchant_code.feeds import limits as feed_limits
    from merchant_code.feeds import quality as feed_quality
    from merchant_code.feeds import runner
    from merchant_code.feeds import status as feed_status

    await _migrate(url)
    pool = await db.create_pool(url, max_size=4)
    try:
        async with db.acquire(pool) as conn:
            if args.action == "add":
                try:
                    config = json.loads(args.config)
                except json.JSONDecodeError as exc:
                    raise DomainError(f"--config is not JSON: {exc}") from None
                if not isinstance(config, dict):
                    raise DomainError("--config must be a JSON object")
                if args.allow_private:
                    config["allow_private"] = True
                module = runner.module_for(args.kind)
                try:
                    msgspec.convert(
                        {"url": args.url, **{k: v for k, v in config.items() if k not in runner.RUNNER_KEYS}},
                        module.Config,
                    )
                    feed_limits.from_config(config)
                    feed_quality.thresholds_for(args.kind, config)
                except msgspec.ValidationError as exc:
                    raise DomainError(f"the {args.kind} source's options are not valid: {exc}") from None
                if args.interval < 60:
                    raise DomainError("--interval must be at least 60 seconds")
                async with conn.transaction():
                    await db.queries.create_feed_source(
                        conn,
                        kind=args.kind,
                        name=args.name,
                        url=args.url,
                        config=config,
                        interval_seconds=args.interval,
                    )
                    detail = {"kind": args.kind, "url": args.url, "interval": args.interval, "config": config}
                    await _console_audit(conn, "feed.add", "feed_source", args.name, detail)
                print(f"source {args.name} ({args.kind}) every {args.interval} s from {args.url}")
                return
            if args.action == "status":
                shown = await feed_status.lines(conn, args.source, args.verbose)
                if shown is None:  # a mistyped name is bad input: one line, exit 2
                    print(f"merchant-code: error: no feed source is named {args.source!r}", file=sys.stderr)
                    sys.exit(2)
                print("\n".join(shown))
                return
            if args.action in ("disable", "enable", "remove"):
                print(await _change_source(conn, args.action, args.source))
                return
            if args.action == "map":
                await _map(conn, args)
                return
            if args.action == "unmatched":
                await _unmatched(conn, args.source, args.limit)
                return
            if args.action == "quality":
                await _print_quality(conn, args.source)
                return
            names = (
                [args.source]
                if args.source
                else [r["name"] async for r in db.queries.list_feed_sources(conn) if r["enabled"]]
            )
        failed = []
        for name in names:
            result = await runner.run_source(pool, name, progress=_progress(name))
            print(file=sys.stderr)
            c = result.counts
            print(
                f"{name}: {result.status} in {result.seconds:.1f} s, {result.pages} page(s):"
                f" fetched {c.fetched} = inserted {c.inserted} + updated {c.updated}"
                f" + unchanged {c.unchanged} + quarantined {c.quarantined}"
                + (f"; {result.error}" if result.error else "")
            )
            if result.status == "failed":
                failed.append(name)
    finally:
        await pool.close()
    if failed:  # cron, or a CI job, must notice: exit 1 (2 stays for bad arguments)
        print(f"merchant-code: error: {len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


def _progress(name: str) -> Any:
    def show(result: Any) -> None:
        c = result.counts
        bar = "#" * min(40, result.pages)
        print(f"\r{name} [{bar:<40}] page {result.pages}: {c.fetched} records, {c.quarantined} quarantined",
              end="", file=sys.stderr, flush=True)  # fmt: skip

    return show


def _shown(value: object) -> str:
    """A value from a feed or a file, printable on a terminal (no escape sequences)."""
    return "".join(ch if ch.isprintable() else "?" for ch in str(value))


async def _map(conn: asyncpg.Connection, args: argparse.Namespace) -> None:
    from pathlib import Path

    from merchant_code.errors import BadArgument
    from merchant_code.feeds import mapping

    if args.csv is not None and (args.external_id or args.shop_code):
        raise BadArgument("give EXTERNAL_ID SHOP_CODE or --csv FILE, not both")
    if args.csv is not None:
        try:
            data = await asyncio.to_thread(Path(args.csv).read_bytes)
        except OSError as exc:
            raise BadArgument(f"cannot read {args.csv}: {exc.strerror or exc}") from None
        pairs = mapping.read_csv(data, args.csv)
    elif args.external_id and args.shop_code:
        pairs = [mapping.Pair(None, args.external_id, args.shop_code)]
    else:
        raise BadArgument("give EXTERNAL_ID SHOP_CODE, or --csv FILE")
    added = await mapping.add(conn, args.source, pairs, origin=args.csv)
    for m in added.mapped[:20]:
        replacing = f", replacing {m.previous}" if m.previous and m.previous != m.shop_code else ""
        print(f"{args.source}: {_shown(m.external_id)} -> {m.shop_code} ({_shown(m.shop_name)}){replacing}")
    if len(added.mapped) > 20:
        print(f"... and {len(added.mapped) - 20} more: {len(added.mapped)} mapping(s) added")
    if added.waiting:
        print(
            f"{added.waiting} record(s) waiting in quarantine for these businesses land at the next pull"
            f" (merchant-code feeds run {args.source})"
        )


async def _unmatched(conn: asyncpg.Connection, source: str, limit: int) -> None:
    from merchant_code.errors import BadArgument
    from merchant_code.feeds import mapping

    if limit < 1:
        raise BadArgument("--limit must be at least 1")
    total, waiting = await mapping.unmatched(conn, source, limit)
    if not total:
        print(f"{source}: nothing waits for a shop")
        return
    more = f" (the {len(waiting)} with most records shown)" if total > len(waiting) else ""
    print(f"{source}: {total} business(es) wait for a shop{more}")
    for w in waiting:
        given = (w.name, w.address, w.postal_code)
        where = ", ".join(_shown(part) for part in given if part) or "no name or address given"
        print(f"{_shown(w.business_id)}  {where}  ({w.records} record(s) waiting)")
        if w.candidate_code is None:
            print("    no candidate shop: add the shop to the register, or map it by hand")
            continue
        shop = f"{w.candidate_code} {_shown(w.candidate_name)}, {_shown(w.candidate_address)}"
        print(f"    best candidate: {shop} ({w.why})")
        print(f"    map it: merchant-code feeds map {source} {_shown(w.business_id)} {w.candidate_code}")


async def _print_quality(conn: asyncpg.Connection, name: str | None) -> None:
    """One block per source, its failing measures marked; a failing source's case is raised (or
    the open one named)."""
    from merchant_code.errors import BadArgument
    from merchant_code.feeds import quality, quality_cases

    now = datetime.datetime.now(datetime.UTC)
    reports = await quality.build(conn, name, now=now)
    if name is not None and not reports:
        raise BadArgument(f"no feed source is named {name!r} (see `merchant-code feeds status`)")
    if not reports:
        print("no feed sources (merchant-code feeds add NAME --kind K --url U)")
        return
    cases = {r.source: r for r in await quality_cases.raise_cases(conn, reports, now)}
    for report in reports:
        verdict = "ok" if report.ok else "FAILING: " + ", ".join(report.failing)
        print(f"{report.source} ({report.kind}, owner {report.department}): {verdict}")
        for m in report.measures:
            mark = {True: "  ok  ", False: "  FAIL", None: "  --  "}[m.ok]
            print(f"{mark} {m.name:<12} {m.detail}")
        if report.quarantine:
            reasons = "; ".join(f"{q.count} x {q.reason}" for q in report.quarantine[:5])
            print(f"       quarantine by reason: {reasons}")
        if report.source in cases:
            case = cases[report.source]
            print(f"       case {case.case_number} " + ("opened" if case.opened else "already open"))
