"""Pages in a real headless Chromium (Debian's, driven by Playwright) against a real server.

The server is `merchant-code serve` in a subprocess on a free loopback port, on the test's own
database; the browser is a phone-sized, Chinese-speaking one unless a test says otherwise.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, async_playwright

from tests.waiting import scaled, wait_for

ROOT = Path(__file__).resolve().parent.parent.parent
PHONE = {"width": 390, "height": 844}
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(db_url: str, tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MERCHANT_CODE_")}
    env |= {
        "MERCHANT_CODE_DATABASE_URL": db_url,
        "MERCHANT_CODE_PORT": str(port),
        "MERCHANT_CODE_SCHEDULER": "false",
        "MERCHANT_CODE_DATA_DIR": str(tmp_path),
        "MERCHANT_CODE_LOG_LEVEL": "warning",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "merchant_code", "serve"], cwd=ROOT, env=env, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode}) before it was ready")
        try:
            return httpx.get(f"{base}/readyz", timeout=scaled(1)).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, 30, "the server to be ready")
        yield base
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=scaled(15))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)


def chromium_path() -> str:
    path = os.environ.get("MERCHANT_CODE_CHROMIUM") or shutil.which("chromium")
    if not path:
        raise RuntimeError("Debian's chromium is needed for the page tests: python3 dev.py test installs it")
    return path


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


@pytest.fixture
async def phone(browser: Browser) -> AsyncIterator[BrowserContext]:
    context = await browser.new_context(viewport=PHONE, locale="zh-CN", is_mobile=True, has_touch=True)
    yield context
    await context.close()
