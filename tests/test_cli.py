"""The command line fails in one clear line, and `demo` survives Ctrl-C with its data intact."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

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


# a first start migrates and seeds; on a busy machine that takes a while: wait on readiness, not a clock
READY_SECONDS = 180
# what a stop must fit in (the brief of the service: Ctrl-C or SIGTERM stops everything within 10 s)
STOP_SECONDS = 10
UNCLEAN = ("Killing worker", "refused to gracefully stop", "Traceback")


class Running:
    """`merchant-code serve` or `demo` in its own process group (as a terminal runs it), its output
    in a file read as it grows."""

    started: ClassVar[list[Running]] = []

    def __init__(self, tmp_path: Path, *args: str, **settings: str) -> None:
        self.log_path = tmp_path / f"out-{time.monotonic_ns()}.log"
        self.pg = Path(settings["pg_data"])
        self.port = _free_port()
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "merchant_code", *args, "--port", str(self.port)],
                env=_env(**settings),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                start_new_session=True,
            )
        Running.started.append(self)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, check: Any, what: str, seconds: float = READY_SECONDS) -> None:
        deadline = time.monotonic() + seconds
        while not check():
            if self.proc.poll() is not None:
                pytest.fail(f"exited {self.proc.returncode} while waiting for {what}:\n{self.output()}")
            if time.monotonic() > deadline:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                pytest.fail(f"timed out waiting for {what}:\n{self.output()}")
            time.sleep(0.2)

    def ready(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self, signum: int, group: bool) -> None:
        """Ctrl-C signals the terminal's whole foreground process group; a service manager sends
        SIGTERM to the main process. Either way: exit 0 within STOP_SECONDS, cleanly."""
        started = time.monotonic()
        if group:
            os.killpg(self.proc.pid, signum)
        else:
            self.proc.send_signal(signum)
        try:
            code = self.proc.wait(timeout=STOP_SECONDS * 3)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            pytest.fail(f"did not stop on {signal.Signals(signum).name}:\n{self.output()}")
        took = time.monotonic() - started
        out = self.output()
        assert code == 0, out
        assert took < STOP_SECONDS, f"took {took:.1f} s to stop:\n{out}"
        assert not [bad for bad in UNCLEAN if bad in out], out
        assert not _postgres_running(self.pg), "the embedded PostgreSQL was left running"


@pytest.fixture(autouse=True)
def _no_service_left_running() -> Iterator[None]:
    """A test that fails half-way leaves no demo or server (nor its database) behind."""
    yield
    while Running.started:
        run = Running.started.pop()
        if run.proc.poll() is None:
            os.killpg(run.proc.pid, signal.SIGTERM)
            try:
                run.proc.wait(timeout=STOP_SECONDS * 3)
            except subprocess.TimeoutExpired:
                os.killpg(run.proc.pid, signal.SIGKILL)
                run.proc.wait()


def _postgres_running(pg: Path) -> bool:
    try:
        pid = int((pg / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _banner(run: Running) -> list[str]:
    run.wait_for(lambda: "demo logins:" in run.output() and "data quality:" in run.output(), "the banner")
    return run.output().splitlines()


def _scan_codes(banner: list[str]) -> list[str]:
    return [ln.split()[0].split("/s/")[1] for ln in banner if ln.startswith("    http") and "/s/" in ln]


@pytest.mark.slow
def test_demo_stops_on_ctrl_c_and_on_sigterm_and_finds_its_data_again(tmp_path: Path) -> None:
    settings = {"pg_data": str(tmp_path / "pg"), "data_dir": str(tmp_path / "var"), "demo_shops": "300"}
    first = Running(tmp_path, "demo", **settings)
    first.wait_for(first.ready, "the demo to be ready")
    lines = _banner(first)
    # the banner comes after granian's start-up lines, where it is seen
    assert max(i for i, ln in enumerate(lines) if "Started worker" in ln) < lines.index("  demo logins:")
    assert any("seeding a demo district" in ln for ln in lines)
    scans = _scan_codes(lines)
    assert len(scans) >= 3
    assert all(re.fullmatch(r"[0-9A-Z]{13}", code) for code in scans)
    assert any(re.match(r"\s+merchant\s+merchant / \S+", ln) for ln in lines)
    first.stop(signal.SIGINT, group=True)

    second = Running(tmp_path, "demo", **settings)
    second.wait_for(second.ready, "the demo to be ready again")
    lines = _banner(second)
    assert not any("seeding" in ln for ln in lines), "the second start seeded again"
    assert _scan_codes(lines) == scans
    second.stop(signal.SIGTERM, group=False)


@pytest.mark.slow
def test_serve_with_two_workers_stops_on_ctrl_c_and_on_sigterm(tmp_path: Path) -> None:
    settings = {"pg_data": str(tmp_path / "pg"), "data_dir": str(tmp_path / "var")}
    migrated = _cli("migrate", timeout=READY_SECONDS, **settings)
    assert migrated.returncode == 0, migrated.stderr
    for signum, group in ((signal.SIGINT, True), (signal.SIGTERM, False)):
        run = Running(tmp_path, "serve", "--workers", "2", **settings)
        run.wait_for(run.ready, "serve to be ready")
        run.wait_for(lambda run=run: run.output().count("Started worker") == 2, "both workers")
        run.stop(signum, group)


@pytest.mark.slow
def test_a_running_demo_is_quiet_and_other_commands_use_its_database(tmp_path: Path) -> None:
    settings = {"pg_data": str(tmp_path / "pg"), "data_dir": str(tmp_path / "var"), "demo_shops": "300"}
    demo = Running(tmp_path, "demo", **settings)
    demo.wait_for(demo.ready, "the demo to be ready")
    printed = _banner(demo)
    # feed pulls start 5 s in; by the time one has landed, the 2-second jobs have run many times
    demo.wait_for(lambda: re.search(r"feed demo-\S+: ok", demo.output()) is not None, "a feed pull")
    chatter = [ln for ln in demo.output().splitlines() if "apscheduler" in ln and ln.startswith("INFO")]
    assert not chatter, chatter[:5]

    status = _cli("feeds", "status", **settings)
    assert status.returncode == 0, status.stderr
    assert f"using the running embedded PostgreSQL in {tmp_path / 'pg'}" in status.stderr
    assert "stopping embedded PostgreSQL" not in status.stderr

    info = _cli("demo", "--info", **settings)
    assert info.returncode == 0, info.stderr
    assert "stopping embedded PostgreSQL" not in info.stderr
    old_code = next(ln for ln in printed if "claim code" in ln).split("claim code ")[1].split(",")[0]
    new_line = next(ln for ln in info.stdout.splitlines() if "claim code" in ln)
    assert old_code not in new_line and re.search(r"claim code [0-9A-Z]{4}(-[0-9A-Z]{4}){3}", new_line)
    scans = [ln for ln in printed if ln.startswith("    http") and "/s/" in ln]
    assert scans and all(ln in info.stdout.splitlines() for ln in scans)
    assert next(ln for ln in printed if re.match(r"\s+merchant\s+merchant / ", ln)) in info.stdout
    demo.stop(signal.SIGINT, group=True)
    assert "stopping embedded PostgreSQL" in demo.output()


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
