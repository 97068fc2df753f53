"""Schemathesis with every check (`--checks all`) against the service as it is deployed: served by
granian on a loopback port, over real HTTP (test_schema_fuzz runs in process, so it never sees
what the server itself does to a request: its framing, its limits, its headers).

Fixed seed, deterministic generation, a few examples per operation: the same requests in CI every
time, in about a minute. Sent as the manager (the role that reaches most operations) and as
nobody. What a check reports fails the test with Schemathesis' own report, which carries a curl
line for each finding.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from litestar.testing import AsyncTestClient

from merchant_code.settings import Settings
from tests import waiting
from tests import world as w

ROOT = Path(__file__).resolve().parent.parent
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
EXAMPLES = os.environ.get("MERCHANT_CODE_HTTP_FUZZ_EXAMPLES", "3")
SEED = "20260115"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _serve(settings: Settings, port: int, log: Path) -> subprocess.Popen[bytes]:
    """`merchant-code serve` on the test's database, one granian worker, in its own process group."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MERCHANT_CODE_")}
    values = {
        "database_url": settings.database_url or "",
        "data_dir": settings.data_dir,  # the same signing key: the world's tokens hold
        "scheduler": "false",
        "scan_rate": "0",
        # failed logins and claims are what a fuzzer sends: none may lock the rest of the run out
        "throttle_failures": "100000",
        "workers": "1",
        "log_level": "warning",
    }
    env.update({f"MERCHANT_CODE_{k.upper()}": v for k, v in values.items()})
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "merchant_code", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_ready(proc: subprocess.Popen[bytes], base: str, log: Path) -> None:
    def ready() -> bool:
        if proc.poll() is not None:
            pytest.fail("the server exited before it was ready:\n" + log.read_text(errors="replace"))
        try:
            return httpx.get(f"{base}/readyz", timeout=waiting.scaled(2)).status_code == 200
        except httpx.TransportError:
            return False

    try:
        waiting.wait_for(ready, 60, "the server to be ready")
    except AssertionError as late:
        pytest.fail(f"{late}:\n" + log.read_text(errors="replace"))


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# positive_data_acceptance expects a schema-valid request to succeed (or 401/403/404/409), but the
# service deliberately refuses with a 422 what JSON Schema cannot say: a shop code whose check
# character is wrong, a claim code or text a rule refuses; that 422 is the documented answer
EXCLUDED_CHECKS = "positive_data_acceptance"
# logging out and changing the password end the session a run is sent with; the anonymous run
# sends them (and test_schema_fuzz sends them with sessions of their own)
ENDS_SESSION = ("/api/v1/auth/logout", "/api/v1/auth/password")


def _schemathesis(base: str, workdir: Path, *headers: str) -> subprocess.CompletedProcess[str]:
    args = [
        str(SCHEMATHESIS),
        "run",
        f"{base}/schema/openapi.json",
        "--checks",
        "all",
        "--exclude-checks",
        EXCLUDED_CHECKS,
        "--seed",
        SEED,
        "--generation-deterministic",
        "--max-examples",
        EXAMPLES,
        "--workers",
        "1",
        "--phases",
        "examples,coverage,fuzzing",
        "--no-shrink",
        "--request-timeout",
        "30",
    ]
    for header in headers:
        args += ["--header", header]
    for path in ENDS_SESSION if headers else ():
        args += ["--exclude-path", path]
    # its own working folder: Schemathesis keeps a .schemathesis folder of replays there
    return subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=workdir)


async def test_schemathesis_with_every_check_over_http_finds_nothing(
    client: AsyncTestClient[Any], conn: asyncpg.Connection, settings: Settings, tmp_path: Path
) -> None:
    world = await w.build(conn, client)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    proc = _serve(settings, port, log)
    try:
        _wait_ready(proc, base, log)
        runs = {
            "manager": _schemathesis(base, tmp_path, f"Authorization: Bearer {world.tokens['manager']}"),
            "anonymous": _schemathesis(base, tmp_path),
        }
    finally:
        _stop(proc)
    failed = {who: run.stdout + run.stderr[-2000:] for who, run in runs.items() if run.returncode}
    assert failed == {}, "\n\n".join(f"--- as {who}:\n{text}" for who, text in failed.items())
