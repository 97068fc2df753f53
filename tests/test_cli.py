"""The command line fails in one clear line, and `demo` survives Ctrl-C with its data intact."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MERCHANT_CODE_")}
    env.update({f"MERCHANT_CODE_{k.upper()}": v for k, v in values.items()})
    return env


def _cli(*args: str, timeout: float = 60, **values: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "merchant_code", *args],
        env=_env(**values),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def _one_clear_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("merchant-code: error: ")
    return lines[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_malformed_database_url_is_one_line_and_exit_2() -> None:
    done = _cli("migrate", database_url="postgres//nohost")
    assert "MERCHANT_CODE_DATABASE_URL" in _one_clear_line(done)
    assert done.returncode == 2


def test_an_unreachable_server_is_one_line() -> None:
    done = _cli("migrate", database_url=f"postgresql://nobody@127.0.0.1:{_free_port()}/db")
    assert "connection refused" in _one_clear_line(done)


def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = _cli("serve", "--port", str(port), pg_data=str(tmp_path / "pg"))
    assert f"port {port} on 127.0.0.1 is in use" in _one_clear_line(done)


def test_a_data_folder_that_cannot_be_used_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the data folder's parent should be")
    done = _cli("migrate", pg_data=str(blocker / "pg"))
    assert "cannot use data folder" in _one_clear_line(done)


def test_startup_refuses_a_database_whose_migration_was_edited(db_url: str) -> None:
    import asyncio

    import asyncpg

    async def tamper() -> None:
        conn = await asyncpg.connect(db_url)
        await conn.execute("UPDATE schema_migration SET checksum = 'edited' WHERE version = 1")
        await conn.close()

    asyncio.run(tamper())
    done = _cli("migrate", database_url=db_url)
    assert "0001_areas_trades_shops.sql was edited" in _one_clear_line(done)
    assert done.returncode == 1


def test_migrate_against_a_configured_server_applies_nothing_twice(db_url: str) -> None:
    done = _cli("migrate", database_url=db_url)
    assert done.returncode == 0, done.stderr
    assert "applied 0 migration(s)" in done.stdout


def _start_demo(pg: Path, port: int) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "merchant_code", "demo", "--port", str(port)],
        env=_env(pg_data=str(pg), demo_shops="300", log_level="warning"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        start_new_session=True,  # its own process group, as a terminal would have
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "demo logins" in line:
            for _ in range(3):
                lines.append(proc.stdout.readline())
            break
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc, lines
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    proc.kill()
    proc.communicate()
    pytest.fail("demo never became ready:\n" + "".join(lines))


def _stop(proc: subprocess.Popen[str]) -> None:
    # Ctrl-C in a terminal signals the whole foreground process group
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("demo did not stop on Ctrl-C")
    finally:
        if proc.stdout:
            proc.stdout.close()


@pytest.mark.slow
def test_demo_serves_stops_on_ctrl_c_and_finds_its_data_again(tmp_path: Path) -> None:
    pg, port = tmp_path / "pg", _free_port()
    proc, first = _start_demo(pg, port)
    _stop(proc)
    assert not (pg / "postmaster.pid").exists(), "the embedded PostgreSQL was left running"
    assert any("seeding a demo district" in ln for ln in first)
    scans = [ln.split()[0] for ln in first if "/s/" in ln]
    assert len(scans) >= 3
    assert all(re.search(r"/s/[0-9A-Z]{13}$", url) for url in scans)
    assert any(re.match(r"\s+merchant\s+merchant / \S+", ln) for ln in first)

    proc, second = _start_demo(pg, port)
    try:
        assert not any("seeding" in ln for ln in second), "the second start seeded again"
        assert [ln.split()[0] for ln in second if "/s/" in ln] == scans
    finally:
        _stop(proc)
    assert not (pg / "postmaster.pid").exists()


def test_channels_are_added_listed_and_refused_when_malformed(db_url: str) -> None:
    added = _cli(
        "channels",
        "add",
        "sms",
        "--url",
        "http://127.0.0.1:9/hook",
        "--allow-private",
        database_url=db_url,
    )
    assert added.returncode == 0, added.stderr
    assert "channel sms (enabled)" in added.stdout
    listed = _cli("channels", "list", database_url=db_url)
    assert listed.returncode == 0 and "sms" in listed.stdout and "waiting 0" in listed.stdout
    bad = _cli("channels", "add", "inbox", "--url", "http://x", database_url=db_url)
    assert bad.returncode != 0 and "not inbox" in _one_clear_line(bad)
