"""`merchant-code feeds add|run|status` against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests import cli, factories

FIXTURES = Path(__file__).parent / "fixtures" / "feeds" / "licences"


@pytest.fixture
def registry_server() -> Iterator[str]:
    pages = [(FIXTURES / "page1.json").read_bytes(), (FIXTURES / "page2.json").read_bytes()]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages[1] if "updated_since" in self.path else pages[0]
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/licences"
    server.shutdown()
    server.server_close()


async def test_add_run_and_status_of_a_source(
    db_url: str, conn: asyncpg.Connection, registry_server: str
) -> None:
    shop_id, _ = await factories.shop(conn)
    await conn.execute("UPDATE shop SET uscc = '91310106MA1FL0XX2B' WHERE id = $1", shop_id)

    added = await asyncio.to_thread(
        cli.run, db_url, "feeds", "add", "registry", "--kind", "licence_registry", "--url", registry_server,
        "--allow-private", "--interval", "600",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    ran = await asyncio.to_thread(cli.run, db_url, "feeds", "run", "registry")
    assert ran.returncode == 0, ran.stderr
    assert "registry: ok" in ran.stdout and "fetched" in ran.stdout
    assert await conn.fetchval("SELECT count(*) FROM licence WHERE shop_id = $1", shop_id) >= 1
    status = await asyncio.to_thread(cli.run, db_url, "feeds", "status")
    assert "registry" in status.stdout and "last run ok" in status.stdout

    refused = await asyncio.to_thread(
        cli.run,
        db_url,
        "feeds",
        "add",
        "other",
        "--kind",
        "fhrs",
        "--url",
        "http://x/",
        "--config",
        '{"page_size": 0}',
    )
    assert refused.returncode == 1 and "not valid" in refused.stderr and "Traceback" not in refused.stderr
    private = await asyncio.to_thread(
        cli.run, db_url, "feeds", "add", "inside", "--kind", "licence_registry", "--url", registry_server
    )
    assert private.returncode == 2 and "loopback" in private.stderr  # refused when stored, not when run
    assert "--allow-private" in private.stderr and "Traceback" not in private.stderr


async def test_a_source_can_be_disabled_enabled_and_removed_and_each_is_audited(
    db_url: str, conn: asyncpg.Connection, registry_server: str
) -> None:
    added = await asyncio.to_thread(
        cli.run, db_url, "feeds", "add", "registry", "--kind", "licence_registry", "--url", registry_server,
        "--allow-private",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    ran = await asyncio.to_thread(cli.run, db_url, "feeds", "run", "registry")
    assert ran.returncode == 0, ran.stderr

    disabled = await asyncio.to_thread(cli.run, db_url, "feeds", "disable", "registry")
    assert disabled.returncode == 0 and "registry: disabled" in disabled.stdout, disabled.stderr
    assert await conn.fetchval("SELECT enabled FROM feed_source WHERE name = 'registry'") is False
    everything = await asyncio.to_thread(cli.run, db_url, "feeds", "run")  # every enabled source: none
    assert "registry" not in everything.stdout

    enabled = await asyncio.to_thread(cli.run, db_url, "feeds", "enable", "registry")
    assert enabled.returncode == 0 and "registry: enabled" in enabled.stdout
    assert await conn.fetchval("SELECT enabled FROM feed_source WHERE name = 'registry'") is True

    licences = await conn.fetchval("SELECT count(*) FROM licence")
    removed = await asyncio.to_thread(cli.run, db_url, "feeds", "remove", "registry")
    assert removed.returncode == 0 and "registry: removed" in removed.stdout, removed.stderr
    assert await conn.fetchval("SELECT count(*) FROM feed_source") == 0
    assert await conn.fetchval("SELECT count(*) FROM feed_run") == 0
    assert await conn.fetchval("SELECT count(*) FROM licence") == licences  # what it brought stays

    actions = [r["action"] for r in await conn.fetch("SELECT action FROM audit_event ORDER BY id")]
    assert actions[-3:] == ["feed.disable", "feed.enable", "feed.remove"]
    unknown = await asyncio.to_thread(cli.run, db_url, "feeds", "disable", "nothing-here")
    assert unknown.returncode == 1 and "nothing-here" in unknown.stderr and "Traceback" not in unknown.stderr


async def test_a_failed_run_exits_1_so_cron_notices(db_url: str, conn: asyncpg.Connection) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    added = await asyncio.to_thread(
        cli.run, db_url, "feeds", "add", "gone", "--kind", "licence_registry",
        "--url", f"http://127.0.0.1:{port}/licences", "--allow-private",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    ran = await asyncio.to_thread(cli.run, db_url, "feeds", "run", "gone")
    assert ran.returncode == 1, (ran.stdout, ran.stderr)
    assert "gone: failed" in ran.stdout and "1 run(s) failed: gone" in ran.stderr
    assert "Traceback" not in ran.stderr
