"""The real service (`merchant-code serve`, granian) on a loopback port, for tests that attack
it as a client would: bursts, slow bodies, sources due at once."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from tests import waiting

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(db_url: str, port: int, settings: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MERCHANT_CODE_")}
    env.update(
        {
            "MERCHANT_CODE_DATABASE_URL": db_url,
            "MERCHANT_CODE_PORT": str(port),
            "MERCHANT_CODE_LOG_LEVEL": "warning",
            "MERCHANT_CODE_SCHEDULER": "false",
            "MERCHANT_CODE_SCAN_RATE": "0",
        }
    )
    env.update({f"MERCHANT_CODE_{k.upper()}": v for k, v in settings.items()})
    return env


async def wait_until(check: Callable[[], Awaitable[bool]], seconds: float, what: str) -> None:
    """Poll `check` until it holds; fail naming `what` after `seconds`, scaled to the machine."""
    await waiting.until(check, seconds, what)


class Service:
    """A running `merchant-code serve`: its base URL, its process and what it logged."""

    def __init__(self, base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.base = base
        self.proc = proc
        self.log = log

    def logged(self) -> str:
        return self.log.read_text(errors="replace")


@asynccontextmanager
async def running(db_url: str, **settings: str) -> AsyncIterator[str]:
    """`merchant-code serve` with these settings (MERCHANT_CODE_ names, lower case, without the
    prefix); yields its base URL and stops it (SIGTERM, then kill) afterwards."""
    async with serving(db_url, **settings) as service:
        yield service.base


@asynccontextmanager
async def serving(db_url: str, **settings: str) -> AsyncIterator[Service]:
    """`running`, for a test that also needs the process (its workers) and its log."""
    port = free_port()
    with tempfile.TemporaryDirectory() as data, tempfile.TemporaryDirectory() as logs:
        env = _env(db_url, port, {"data_dir": data, **settings})
        log_path = Path(logs) / "serve.log"
        # appended to by the server's processes, read by the test whenever it likes
        log = log_path.open("a")
        proc = subprocess.Popen(  # noqa: ASYNC220  (started once; the test then waits on HTTP)
            [sys.executable, "-m", "merchant_code", "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
        log.close()  # the server has its own copy
        service = Service(f"http://127.0.0.1:{port}", proc, log_path)

        async def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"serve exited {proc.returncode}:\n{service.logged()}")
            try:
                async with httpx.AsyncClient(timeout=2) as client:
                    return (await client.get(f"{service.base}/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        try:
            await wait_until(ready, 120, "the server to be ready")
            yield service
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    await asyncio.to_thread(proc.wait, 20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    await asyncio.to_thread(proc.wait)


class Watch:
    """Scans and /readyz sent one after another while an attack runs: every answer and how long
    it took, so a test can say the service went on answering throughout."""

    def __init__(self, base: str, scan_path: str) -> None:
        self.base = base
        self.scan_path = scan_path
        self.scans: list[tuple[int, float]] = []
        self.ready: list[int] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        async with httpx.AsyncClient(base_url=self.base, timeout=10) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    status = (await client.get(self.scan_path)).status_code
                except httpx.TimeoutException:
                    status = 0
                self.scans.append((status, time.monotonic() - started))
                try:
                    self.ready.append((await client.get("/readyz")).status_code)
                except httpx.TimeoutException:
                    self.ready.append(0)

    async def __aenter__(self) -> Watch:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task

    def assert_answered_throughout(self, slowest: float = 2.0) -> None:
        assert self.scans, "no scan was answered while the attack ran"
        assert all(status == 200 for status, _ in self.scans), self.scans
        assert max(seconds for _, seconds in self.scans) < slowest, sorted(s for _, s in self.scans)[-5:]
        assert self.ready and all(status == 200 for status in self.ready), self.ready
