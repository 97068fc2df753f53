"""Where to look in a demo: a few shops' scan pages, the demo logins (their passwords derive from
the seed) and the demo's own addresses. Printed by `merchant-code demo` once the server answers
and by `demo --info`; shown at `/` in demo mode."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import asyncpg
import msgspec

from merchant_code import db
from merchant_code.district import DemoLogin, demo_logins

__all__ = ["DemoLogin", "DemoShop", "Where", "logins", "read_where", "shops", "write_where"]


class DemoShop(msgspec.Struct, frozen=True):
    code: str
    name: str
    trade_name: str


class Where(msgspec.Struct, frozen=True):
    """What a running demo was started with, kept in the data folder for `demo --info`."""

    base_url: str
    feeds_url: str
    pid: int


def where_file(data_dir: str) -> Path:
    return Path(data_dir) / "demo.json"


def write_where(data_dir: str, where: Where) -> None:
    path = where_file(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msgspec.json.encode(where))


def read_where(data_dir: str) -> Where | None:
    try:
        return msgspec.json.decode(where_file(data_dir).read_bytes(), type=Where)
    except (OSError, msgspec.DecodeError, json.JSONDecodeError):
        return None


async def shops(conn: asyncpg.Connection) -> list[DemoShop]:
    return [msgspec.convert(dict(r), DemoShop) async for r in db.queries.list_demo_shops(conn)]


def logins(seed: int) -> list[DemoLogin]:
    return demo_logins(seed)


# how long the banner waits for the server to answer /readyz (a first start on a busy machine is slow)
READY_WAIT_SECONDS = 600.0


def announce() -> None:
    """`demo`'s banner process: argv READY_URL PARENT_PID, the banner on stdin; prints it once the
    server is ready, and gives up when the demo is gone."""
    import httpx

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the demo, which then ends this
    ready, parent = sys.argv[1], int(sys.argv[2])
    banner = sys.stdin.read()
    deadline = time.monotonic() + READY_WAIT_SECONDS
    while time.monotonic() < deadline and os.getppid() == parent:
        try:
            if httpx.get(ready, timeout=2).status_code == 200:
                print(banner, flush=True)
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
