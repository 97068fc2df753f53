"""Load: a city's traffic at fixed arrival rates (open loop), with a feed pull and a policy push in
the same window; then the scan cache against the bare handler, and a flood of searches.

    .venv/bin/python bench/city_mix.py                                  # 1,000,000 shops (the issue's scale)
    .venv/bin/python bench/city_mix.py --shops 30000 --pg-data /tmp/bench-pg-city --seconds 10 \\
        --city-seconds 60                                               # a quick look

One process tree: the embedded PostgreSQL in --pg-data (seeded once with --shops shops, as
bench/scan_bench.py does; or --database-url), the service (`python -m merchant_code serve`,
--workers granian workers, its scheduler ON: the pull's and the push's profiles are rebuilt and
the push is sent by the service's own jobs), the bare app (bench/bare_app.py, the same workers)
and the load processes. MERCHANT_CODE_TRUSTED_PROXIES=127.0.0.1: every request carries an
X-Forwarded-For from a pool of 10.x.y.z addresses (65,536 per load process), so per-address
limits behave as in a city; the bench accounts (merchants, inspectors) are bench/load_mix.py's.

OPEN LOOP. Each kind has a fixed arrival rate; a request is sent when it is due whether or not
the earlier ones have been answered, on an idle keep-alive connection or a new one, and its
latency runs from when it was DUE (a stalled service shows as latency, not as a slower client).
When --max-inflight requests of a process are already waiting, a due request is not sent: it is
counted as `unsent` (an error of its kind; the cap is shared by every kind of the process, so
when scans pile up the searches and writes due then are unsent too). A request unanswered after
--timeout is a `timeout`.
The schedule's lag (when a request was written less when it was due) is reported: when its p99
passes 5 ms, the output says that the client fell behind, and the figures are the client's.

    scan     2,000/s  GET /s/{code}, HTML and JSON half/half; codes half uniform over every shop,
                      half Zipf (s = --zipf, 1.1) over a fixed random permutation of the codes
    search     100/s  GET /api/v1/shops?q=: 80% one of the 200 most common two-character
                      fragments of the shops' names, 20% a rare one (in at most 10 names); a
                      quarter of them with lat/lon of a real shop
    update      30/s  PATCH /api/v1/merchant/shops/{code} by the shop's owner (load_mix's)
    inspect     20/s  POST /api/v1/inspect/shops/{code}/inspections by an inspector covering it

Phases, in order:

1. scans-only: the scans alone at 2,000/s (--seconds): the scan p99 the city is held against;
2. city: every kind for --city-seconds; --events-after seconds in, a LIVES feed of --inspections
   inspections (bench/lives_ingest.py's zip, served on a loopback port) is registered as a source
   and pulled with `merchant-code feeds run`, and a catering policy (the trade nearest 30% of the
   shops) is created for "now" (policies.create, as bench/policy_push.py does) for the service's
   policies-due job to send and deliver. Recorded: when each finished, and when the profiles they
   changed were FRESH. A changed shop is one with an inspection row of the run's source (pull) or
   a delivery of the run's policy (push). A pulled shop's profile is fresh when it is not queued
   in profile_dirty and its shop_profile.rebuilt_at is at or after its rows' created_at. A push
   rewrites no profile (notices are joined when a view is served, migration 0037): it is fresh
   when the citizen JSON of a random sample of PUSH_SAMPLE reached shops, scanned through the
   service, lists the policy (checked from the push's start). Fresh = every changed shop is;
   the lag is fresh time less finish time (target: both finish, and are fresh within 60 s). The
   load keeps running until the window ends; a check that has not come true then waits on,
   without load, up to --fresh-limit seconds;
3. closed loop (64 connections, --closed-seconds each): scans of a hot set (the --hot most popular
   codes of the Zipf order) vs the bare handler over the same shops (GET /bare/{id}), then scans
   of every code uniformly vs the bare handler: the ratios of good answers a second;
4. search flood: the serving rate of searches is measured first (closed loop, --seconds, every
   request from another address; or --search-capacity), then searches from 500 addresses at ten
   times that rate beside the 2,000 scans/s, open loop: scan p99, and how the excess searches
   were answered (statuses, whether a 429/503 carried Retry-After, the refusals' p99).

The EXPLAIN (ANALYZE, BUFFERS) of the search route's SQL for the 20 most common fragments is
recorded (bench/search_plans.py's `explain_common` when it is there; else a local one that runs
the route's SQL). A table prints each target with PASS/FAIL:

    scans p99 < 50 ms, zero errors in every phase (incl. during the pull and the push)
    searches p99 < 300 ms, writes p99 < 250 ms (city phase)
    pull and push finish, and are fresh within 60 s after they end
    hot-set scans >= 3x bare, uniform scans >= 1.0x bare (closed loop)
    flood: scan p99 < 100 ms; the refusals 429/503 with Retry-After, their p99 < 50 ms

One JSON line (machine, commit, every figure) is appended to bench/results/city_mix.jsonl. The
load processes' CPU is reported (client cores) and so is any CPU taken by processes outside the
benchmark (a busy machine's figures are low and noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import datetime
import http.server
import itertools
import json
import multiprocessing
import os
import platform
import random
import signal
import subprocess
import sys
import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack, suppress
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import http_load
import httpx
import lives_ingest
import load_mix
import scan_bench

from merchant_code import auth, db, policies
from merchant_code.embedded import embedded_postgres
from merchant_code.errors import StartupError
from merchant_code.migrate import MigrationError

try:  # the search engineers' plans helper (bench/search_plans.py), when it is there
    import search_plans  # type: ignore[import-not-found]
except ImportError:
    search_plans = None

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results" / "city_mix.jsonl"
LOCAL = "127.0.0.1"
TZ = "Asia/Shanghai"
RATES = {"scan": 2000.0, "search": 100.0, "update": 30.0, "inspect": 20.0}
WRITES = ("update", "inspect")
LAG_WARN_MS = 5.0
FLOOD_ADDRESSES = 500
PUSH_SAMPLE = 100  # reached shops whose citizen answers are scanned to call a push fresh


def note(message: str) -> None:
    print(f"[city_mix] {message}", flush=True)


# -- the database -------------------------------------------------------------------------------


async def shop_table(url: str) -> tuple[array[int], bytes]:
    """Every shop's id (in id order) and code, the codes packed 14 bytes each (load_mix's shape)."""
    conn: asyncpg.Connection = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT id, code FROM shop ORDER BY id")
    finally:
        await conn.close()
    ids = array("q", (r["id"] for r in rows))
    codes = b"".join(r["code"].encode() + b"\n" for r in rows)
    if len(codes) != 14 * len(ids):
        raise RuntimeError("shop codes are not all 13 characters: cannot pack them")
    return ids, codes


async def local_common_fragments(conn: asyncpg.Connection, n: int) -> list[str]:
    rows = await conn.fetch(
        "SELECT g FROM shop s, unnest(name_bigrams(s.name)) AS g"
        " WHERE s.status <> 'closed' AND g !~ '[[:space:][:punct:]]'"
        " GROUP BY g ORDER BY count(*) DESC, g LIMIT $1",
        n,
    )
    return [r["g"] for r in rows]


async def local_rare_fragments(conn: asyncpg.Connection, n: int) -> list[str]:
    rows = await conn.fetch(
        "SELECT g FROM shop s, unnest(name_bigrams(s.name)) AS g"
        " WHERE s.status <> 'closed' AND g !~ '[[:space:][:punct:]]'"
        " GROUP BY g HAVING count(*) <= 10 ORDER BY md5(g) LIMIT $1",
        n,
    )
    return [r["g"] for r in rows]


async def local_explain(conn: asyncpg.Connection, fragments: list[str]) -> list[dict[str, Any]]:
    """EXPLAIN (ANALYZE, BUFFERS) of the route's SQL (db.queries.search_shops, a first page of 20)."""
    query = db.queries.search_shops
    values = {
        "q": None,
        "trade": None,
        "area_prefix": None,
        "grade": None,
        "include_closed": False,
        "after": "",
        "limit": 20,
    }
    out = []
    for fragment in fragments:
        args = [{**values, "q": fragment}[name] for name in query.parameters]
        plan = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {query.sql}", *args)
        lines = [r[0] for r in plan]
        ms = next((float(x.split()[2]) for x in lines if x.startswith("Execution Time:")), None)
        out.append({"fragment": fragment, "execution_ms": ms, "plan": lines})
    return out


async def fragments_and_plans(url: str, explain: int) -> dict[str, Any]:
    conn: asyncpg.Connection = await asyncpg.connect(url)
    try:
        helper = search_plans
        common_of = helper.common_fragments if helper else local_common_fragments
        rare_of = helper.rare_fragments if helper else local_rare_fragments
        explain_of = helper.explain_common if helper else local_explain
        started = time.perf_counter()
        common = list(await common_of(conn, 200))
        rare = list(await rare_of(conn, 200))
        found = time.perf_counter() - started
        plans = await explain_of(conn, common[:explain])
    finally:
        await conn.close()
    note(f"{len(common)} common and {len(rare)} rare fragments in {found:.1f} s; {len(plans)} plans")
    return {
        "helper": "bench/search_plans.py" if helper else "local fallback",
        "common": common,
        "rare": rare,
        "plans": plans,
    }


async def catering_trade(conn: asyncpg.Connection) -> tuple[str, int]:
    """The trade whose shops are nearest 30% of all (catering at a million: about 300,000)."""
    rows = await conn.fetch("SELECT trade, count(*) AS n FROM shop GROUP BY 1")
    total = sum(r["n"] for r in rows)
    best = min(rows, key=lambda r: (abs(r["n"] - 0.3 * total), r["trade"]))
    return best["trade"], best["n"]


# -- request building ---------------------------------------------------------------------------


class Draw:
    """What each kind sends (built per request, from an address of this process's pool)."""

    def __init__(self, spec: dict[str, Any], seed: int) -> None:
        self.rng = random.Random(seed)
        self.mix = load_mix.Mix({**spec, "mix": (("scan", 1.0),)})
        self.writes = {k: load_mix.Mix({**spec, "mix": ((k, 1.0),)}) for k in WRITES}
        self.count = self.mix.count
        order = list(range(self.count))
        random.Random(spec["zipf_seed"]).shuffle(order)  # the same popular shops in every process
        self.order = order
        self.cum = list(itertools.accumulate(1.0 / (r + 1) ** spec["zipf"] for r in range(self.count)))
        self.common: list[str] = spec["fragments"]["common"]
        self.rare: list[str] = spec["fragments"]["rare"] or self.common
        self.placed = self.mix.placed
        block = spec["address_block"]
        self.addresses = [f"10.{block}.{n >> 8}.{n & 255}" for n in range(65536)]
        self.flood_addresses = [f"10.250.{n >> 8}.{n & 255}" for n in range(FLOOD_ADDRESSES)]
        self.at = self.rng.randrange(65536)

    def address(self) -> str:
        self.at = (self.at + 1) & 0xFFFF
        return self.addresses[self.at]

    def zipf_index(self) -> int:
        rank = bisect.bisect(self.cum, self.rng.random() * self.cum[-1])
        return self.order[min(rank, self.count - 1)]

    def code(self, index: int) -> str:
        return self.mix.codes[index * 14 : index * 14 + 13].decode()

    def scan(self) -> bytes:
        rng = self.rng
        index = rng.randrange(self.count) if rng.random() < 0.5 else self.zipf_index()
        accept = "application/json" if rng.random() < 0.5 else "text/html,application/xhtml+xml"
        return self.mix.get(f"/s/{self.code(index)}", self.address(), accept)

    def search(self, address: str | None = None) -> bytes:
        rng = self.rng
        fragment = rng.choice(self.common if rng.random() < 0.8 else self.rare)
        query = f"q={quote(fragment, safe='')}"
        if rng.random() < 0.25 and self.placed:
            shop = rng.choice(self.placed)
            query += f"&lat={shop['lat']:.6f}&lon={shop['lon']:.6f}"
        return self.mix.get(f"/api/v1/shops?{query}", address or self.address(), "application/json")

    def flood_search(self) -> bytes:
        return self.search(self.flood_addresses[self.rng.randrange(FLOOD_ADDRESSES)])

    def write(self, kind: str) -> bytes:
        return self.writes[kind].request(self.rng, self.address())[1]

    def build(self, kind: str) -> bytes:
        if kind == "scan":
            return self.scan()
        if kind == "search":
            return self.search()
        if kind == "flood":
            return self.flood_search()
        return self.write(kind)


# -- the open-loop client -----------------------------------------------------------------------


class Tally:
    __slots__ = ("failures", "latencies", "refusals", "refused", "refused_retry_after", "statuses", "unsent")

    def __init__(self) -> None:
        self.statuses: Counter[int] = Counter()
        self.failures: Counter[str] = Counter()
        self.latencies: array[float] = array("d")  # the good answers (2xx/3xx), seconds from due
        self.refusals: array[float] = array("d")  # the 429/503 answers, seconds from due
        self.refused_retry_after = 0
        self.refused = 0
        self.unsent = 0

    def plain(self) -> dict[str, Any]:
        return {s: getattr(self, s) for s in self.__slots__}


class Slot:
    """One connection's view, in the shape http_load's connection protocol expects: what it
    carries now (kind, due time) and where its answer is tallied."""

    __slots__ = ("client", "kind", "pool")

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.kind = ""
        self.client: OpenClient | None = None

    @property
    def stopping(self) -> bool:
        return self.pool.stopping

    def next_request(self) -> bytes | None:  # never asked: OpenClient.send_next gives the slot back
        return None

    def completed(self, status: int, sent_at: float) -> None:
        self.pool.completed(self, status, sent_at)

    def failed(self, reason: str) -> None:
        self.pool.failed(self.kind, reason)


class OpenClient(http_load._Client):
    """http_load's keep-alive connection, driven from outside: `fire` writes one request stamped
    with its due time; when the answer is complete the connection goes back to the idle list."""

    retry_after = False

    def fire(self, kind: str, request: bytes, due: float) -> None:
        assert self.transport is not None
        slot: Slot = self.run  # type: ignore[assignment]
        slot.kind = kind
        self.inflight = True
        self.sent_at = due
        self.retry_after = False
        self.transport.write(request)

    def send_next(self) -> None:
        slot: Slot = self.run  # type: ignore[assignment]
        slot.pool.idle.append(self)

    def data_received(self, data: bytes) -> None:
        if self.state == http_load._HEAD:
            joined = bytes(self.buf) + data
            end = joined.find(b"\r\n\r\n")
            if end >= 0:
                self.retry_after = b"\r\nretry-after:" in joined[:end].lower()
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        slot: Slot = self.run  # type: ignore[assignment]
        with suppress(ValueError):
            slot.pool.idle.remove(self)
        slot.pool.live.discard(self)
        super().connection_lost(exc)


class Pool:
    """One process's connections for one phase: due requests go out on an idle connection, or a
    new one while fewer than `max_inflight` are busy; otherwise they are counted unsent."""

    def __init__(self, host: str, port: int, window: tuple[float, float], max_inflight: int) -> None:
        self.host, self.port = host, port
        self.t0, self.t1 = window
        self.max_inflight = max_inflight
        self.idle: list[OpenClient] = []
        self.live: set[OpenClient] = set()
        self.connecting = 0
        self.stopping = False
        self.tallies: dict[str, Tally] = {}
        self.opened = 0
        self.lag: array[float] = array("d")

    def tally(self, kind: str) -> Tally:
        found = self.tallies.get(kind)
        if found is None:
            found = self.tallies[kind] = Tally()
        return found

    def measured(self, t: float) -> bool:
        return self.t0 <= t <= self.t1

    def send(self, kind: str, request: bytes, due: float) -> None:
        now = time.monotonic()
        if self.measured(due):
            self.lag.append(now - due)
        if self.idle:
            self.idle.pop().fire(kind, request, due)
            return
        busy = len(self.live) - len(self.idle) + self.connecting
        if busy >= self.max_inflight:
            if self.measured(due):
                self.tally(kind).unsent += 1
            return
        self.connecting += 1
        asyncio.get_running_loop().create_task(self._open(kind, request, due))

    async def _open(self, kind: str, request: bytes, due: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            slot = Slot(self)
            closed: asyncio.Future[None] = loop.create_future()
            _, client = await loop.create_connection(partial(OpenClient, slot, closed), self.host, self.port)
        except OSError as exc:
            if self.measured(due):
                self.tally(kind).failures[f"connect: {type(exc).__name__}"] += 1
            return
        finally:
            self.connecting -= 1
        assert isinstance(client, OpenClient)
        self.opened += 1
        slot.client = client
        self.live.add(client)
        client.fire(kind, request, due)

    def completed(self, slot: Slot, status: int, due: float) -> None:
        if not self.measured(due):
            return
        assert slot.client is not None
        tally = self.tally(slot.kind)
        tally.statuses[status] += 1
        latency = time.monotonic() - due
        if 200 <= status < 400:
            tally.latencies.append(latency)
        elif status in (429, 503):
            tally.refused += 1
            tally.refusals.append(latency)
            tally.refused_retry_after += slot.client.retry_after

    def failed(self, kind: str, reason: str) -> None:
        if not self.stopping:
            self.tally(kind).failures[reason] += 1

    def expire(self, timeout: float) -> None:
        """Requests unanswered after `timeout`: counted, their connections dropped."""
        now = time.monotonic()
        for client in list(self.live):
            if client.inflight and now - client.sent_at > timeout:
                client.inflight = False
                if self.measured(client.sent_at):
                    self.tally(client.run.kind).failures["timeout"] += 1
                if client.transport is not None:
                    client.transport.abort()


async def open_loop(
    draw: Draw, port: int, rates: dict[str, float], window: tuple[float, float], options: dict[str, Any]
) -> dict[str, Any]:
    """Send every kind at its rate from `now` to the window's end (the part before the window is
    the warm-up); each kind's first request is offset at random so processes interleave."""
    pool = Pool(LOCAL, port, window, options["max_inflight"])
    t0, t1 = window
    start = time.monotonic()
    due = {k: start + draw.rng.random() / r for k, r in rates.items() if r > 0}
    every = {k: 1.0 / r for k, r in rates.items() if r > 0}
    checked = start
    cpu_from: float | None = None
    while due:
        now = time.monotonic()
        if cpu_from is None and now >= t0:
            cpu_from = time.process_time()
        for kind in list(due):
            at = due[kind]
            while at <= now:
                pool.send(kind, draw.build(kind), at)
                at += every[kind]
            if at > t1:
                del due[kind]
            else:
                due[kind] = at
        if now - checked > 0.5:
            pool.expire(options["timeout"])
            checked = now
        if due:
            await asyncio.sleep(max(0.0, min(due.values()) - time.monotonic()))
    cpu = time.process_time() - (cpu_from if cpu_from is not None else time.process_time())
    # the last answers: wait for them up to the timeout, then count what is left
    for _ in range(int(options["timeout"] / 0.05) + 1):
        if not any(c.inflight for c in pool.live):
            break
        await asyncio.sleep(0.05)
    pool.expire(0.0)
    pool.stopping = True
    for client in list(pool.live):
        if client.transport is not None:
            client.transport.abort()
    await asyncio.sleep(0)
    return {
        "tallies": {k: t.plain() for k, t in pool.tallies.items()},
        "cpu": cpu,
        "seconds": t1 - t0,
        "opened": pool.opened,
        "lag": pool.lag,
    }


class Lane:
    """A closed-loop connection (http_load's protocol and connect loop) whose next request is
    built by `make`: what bench/load_mix.py's lanes do, for one kind."""

    def __init__(self, make: Callable[[], bytes], tally: Tally, window: tuple[float, float]) -> None:
        self.make = make
        self.tally = tally
        self.t0, self.t1 = window
        self.stopping = False
        self.exhausted = False
        self.clients: set[http_load._Client] = set()

    def next_request(self) -> bytes | None:
        return None if self.stopping else self.make()

    def completed(self, status: int, sent_at: float) -> None:
        now = time.monotonic()
        if self.t0 <= now <= self.t1:
            self.tally.statuses[status] += 1
            if 200 <= status < 400:
                self.tally.latencies.append(now - sent_at)

    def failed(self, reason: str) -> None:
        if self.t0 <= time.monotonic() <= self.t1:
            self.tally.failures[reason] += 1


async def closed_loop(
    make: Callable[[], bytes], port: int, connections: int, window: tuple[float, float]
) -> dict[str, Any]:
    tally = Tally()
    lanes = [Lane(make, tally, window) for _ in range(connections)]
    drivers = [asyncio.create_task(http_load._drive(lane, LOCAL, port)) for lane in lanes]  # type: ignore[arg-type]
    try:
        await asyncio.sleep(max(0.0, window[0] - time.monotonic()))
        cpu_from = time.process_time()
        await asyncio.sleep(max(0.0, window[1] - time.monotonic()))
        cpu = time.process_time() - cpu_from
    finally:
        for lane in lanes:
            lane.stopping = True
            for client in list(lane.clients):
                if client.transport is not None:
                    client.transport.abort()
        for task in drivers:
            task.cancel()
        await asyncio.gather(*drivers, return_exceptions=True)
    return {
        "tallies": {"closed": tally.plain()},
        "cpu": cpu,
        "seconds": window[1] - window[0],
        "lag": array("d"),
    }


def _closed_request(draw: Draw, what: str, ids: array[int], hot: list[int]) -> Callable[[], bytes]:
    """Scans (service) or bare pages for a hot set or for every shop, one index drawn per request."""
    rng = draw.rng

    def index() -> int:
        return rng.choice(hot) if hot else rng.randrange(draw.count)

    if what == "service":
        return lambda: draw.mix.get(
            f"/s/{draw.code(index())}", draw.address(), "text/html,application/xhtml+xml"
        )
    if what == "bare":
        return lambda: draw.mix.get(f"/bare/{ids[index()]}", draw.address(), "text/html")
    return draw.search  # "search": every request from the next address


def _worker(pipe: Connection, spec: dict[str, Any], seed: int) -> None:
    """A load process: runs the phases its parent sends until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        draw = Draw(spec, seed)
        ids: array[int] = spec["ids"]
        hot = [draw.order[r] for r in range(min(spec["hot"], draw.count))]
        pipe.send("ready")
        while (order := pipe.recv()) is not None:
            if order["mode"] == "open":
                ran = asyncio.run(open_loop(draw, order["port"], order["rates"], order["window"], spec))
            else:
                make = _closed_request(draw, order["what"], ids, hot if order["hot"] else [])
                ran = asyncio.run(closed_loop(make, order["port"], order["connections"], order["window"]))
            pipe.send(ran)
    except (EOFError, OSError):
        pass
    finally:
        pipe.close()


class Load:
    """P load processes, kept for every phase."""

    def __init__(self, spec: dict[str, Any], processes: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.workers: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
        for n in range(processes):
            mine, theirs = context.Pipe()
            proc = context.Process(
                target=_worker,
                args=(theirs, {**spec, "address_block": n}, random.randrange(2**32)),
                daemon=True,
            )
            proc.start()
            theirs.close()
            self.workers.append((proc, mine))
        for proc, pipe in self.workers:
            if not pipe.poll(300) or pipe.recv() != "ready":
                raise RuntimeError(f"load process {proc.pid} did not start")

    def run(self, order: dict[str, Any], warmup: float, seconds: float, timeout: float) -> dict[str, Any]:
        """One phase over every process (rates and connections split between them)."""
        start = time.monotonic() + warmup
        count = len(self.workers)
        for n, (_, pipe) in enumerate(self.workers):
            part = dict(order, window=(start, start + seconds))
            if "rates" in order:
                part["rates"] = {k: r / count for k, r in order["rates"].items()}
            if "connections" in order:
                part["connections"] = order["connections"] // count + (n < order["connections"] % count)
            pipe.send(part)
        parts = []
        for proc, pipe in self.workers:
            if not pipe.poll(warmup + seconds + 2 * timeout + 120):
                raise RuntimeError(f"load process {proc.pid} did not report")
            parts.append(pipe.recv())
        return merge(parts)

    def close(self) -> None:
        for _, pipe in self.workers:
            with suppress(OSError):
                pipe.send(None)
        for proc, pipe in self.workers:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
            pipe.close()


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    kinds: dict[str, Tally] = {}
    lag: array[float] = array("d")
    for part in parts:
        lag.extend(part["lag"])
        for kind, plain in part["tallies"].items():
            tally = kinds.setdefault(kind, Tally())
            tally.statuses.update(plain["statuses"])
            tally.failures.update(plain["failures"])
            tally.latencies.extend(plain["latencies"])
            tally.refusals.extend(plain["refusals"])
            tally.refused += plain["refused"]
            tally.refused_retry_after += plain["refused_retry_after"]
            tally.unsent += plain["unsent"]
    seconds = max(p["seconds"] for p in parts)
    return {
        "kinds": kinds,
        "seconds": seconds,
        "client_cores": round(sum(p["cpu"] for p in parts) / seconds, 2) if seconds else None,
        "opened": sum(p.get("opened", 0) for p in parts),
        "lag": lag,
    }


# -- figures ------------------------------------------------------------------------------------


def pct(values: array[float] | list[float], q: float) -> float | None:
    """Nearest-rank percentile in ms."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(1, -(-int(q * len(ordered)) // 100)) - 1] * 1000, 2)


def kind_figures(tally: Tally, seconds: float) -> dict[str, Any]:
    bad = sum(n for s, n in tally.statuses.items() if not 200 <= s < 400)
    failures = sum(tally.failures.values())
    return {
        "rps": round(len(tally.latencies) / seconds, 1) if seconds else 0.0,
        "sent_rps": round((sum(tally.statuses.values()) + failures) / seconds, 1) if seconds else 0.0,
        "ok": len(tally.latencies),
        "errors": bad + failures + tally.unsent,
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "failures": dict(tally.failures),
        "unsent": tally.unsent,
        "p50_ms": pct(tally.latencies, 50),
        "p95_ms": pct(tally.latencies, 95),
        "p99_ms": pct(tally.latencies, 99),
        "max_ms": pct(tally.latencies, 100),
        "refused": tally.refused,
        "refused_with_retry_after": tally.refused_retry_after,
        "refusal_p50_ms": pct(tally.refusals, 50),
        "refusal_p99_ms": pct(tally.refusals, 99),
    }


def phase_figures(ran: dict[str, Any], foreign: float | None) -> dict[str, Any]:
    lag_p99 = pct(ran["lag"], 99)
    kinds = {k: kind_figures(t, ran["seconds"]) for k, t in sorted(ran["kinds"].items())}
    writes = [ran["kinds"][k] for k in WRITES if k in ran["kinds"]]
    if writes:
        joined = Tally()
        for t in writes:
            joined.latencies.extend(t.latencies)
            joined.statuses.update(t.statuses)
            joined.failures.update(t.failures)
            joined.unsent += t.unsent
        kinds["writes"] = kind_figures(joined, ran["seconds"])
    return {
        "seconds": ran["seconds"],
        "kinds": kinds,
        "client_cores": ran["client_cores"],
        "connections_opened": ran["opened"],
        "schedule_lag_p99_ms": lag_p99,
        "schedule_lag_max_ms": pct(ran["lag"], 100),
        "client_behind": lag_p99 is not None and lag_p99 > LAG_WARN_MS,
        "foreign_cores": foreign,
    }


def show(name: str, phase: dict[str, Any]) -> None:
    lag = phase["schedule_lag_p99_ms"]
    print(f"\n{name}  (client {phase['client_cores']} cores; schedule lag p99 {lag} ms;"
          f" other processes {phase['foreign_cores']} cores)")  # fmt: skip
    print(f"  {'kind':<9} {'ok/s':>8} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>9} {'errors':>7}  statuses")
    for kind, f in phase["kinds"].items():

        def ms(key: str, f: dict[str, Any] = f) -> str:
            return "-" if f[key] is None else f"{f[key]:.1f}"

        extra = " ".join(f"{s}:{n}" for s, n in f["statuses"].items())
        if f["failures"]:
            extra += " " + " ".join(f"{r}:{n}" for r, n in f["failures"].items())
        if f["unsent"]:
            extra += f" unsent:{f['unsent']}"
        print(
            f"  {kind:<9} {f['rps']:>8,.1f} {ms('p50_ms'):>8} {ms('p95_ms'):>8} {ms('p99_ms'):>8}"
            f" {ms('max_ms'):>9} {f['errors']:>7}  {extra}"
        )
    if phase["client_behind"]:
        note(
            f"{name}: the load generator fell behind its schedule (lag p99 {phase['schedule_lag_p99_ms']} ms)"
        )
    if (phase["foreign_cores"] or 0) > 0.1:
        note(f"{name}: other processes took {phase['foreign_cores']} cores: figures are low and noisy")


# -- the pull and the push ----------------------------------------------------------------------


class FeedServer:
    """The LIVES zip on a loopback port (a thread), as a publisher would serve it."""

    def __init__(self, body: bytes) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((LOCAL, 0), Handler)
        self.url = f"http://{LOCAL}:{self.server.server_address[1]}/lives.zip"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Events:
    """The pull and the push of the city phase, and the watch on their freshness (a thread)."""

    def __init__(
        self, url: str, env: dict[str, str], args: argparse.Namespace, feed_url: str, base: str
    ) -> None:
        self.url, self.env, self.args, self.feed_url, self.base = url, env, args, feed_url, base
        self.sample: list[str] | None = None  # codes of reached shops whose scans are checked
        self.policy_public_id = ""
        self.name = f"bench-city-{int(time.time())}"
        self.figures: dict[str, Any] = {}
        self.thread: threading.Thread | None = None
        self.error: str | None = None

    def start(self, at: float) -> None:
        self.thread = threading.Thread(target=self._run, args=(at,), daemon=True)
        self.thread.start()

    def join(self, until: float) -> None:
        if self.thread is not None:
            self.thread.join(timeout=max(0.0, until - time.monotonic()))

    def _run(self, at: float) -> None:
        try:
            time.sleep(max(0.0, at - time.monotonic()))
            asyncio.run(self._events(at))
        except Exception as exc:  # reported in the output; the load goes on
            self.error = f"{type(exc).__name__}: {exc}"
            note(f"pull/push: {self.error}")

    async def _events(self, at: float) -> None:
        conn = await db.connect(self.url)
        try:
            started = time.monotonic()
            await conn.execute(
                "INSERT INTO feed_source (kind, name, url, config, interval_seconds)"
                " VALUES ('lives', $1, $2, $3, 86400)",
                self.name,
                self.feed_url,
                {"allow_private": True, "deadline": 3600},
            )
            pull = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "merchant_code", "feeds", "run", self.name),
                env=self.env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            policy_id, targeted = await self._push(conn)
            pushed = time.monotonic()
            note(f"pull of {self.name} and push to {targeted:,} shops started {started - at:+.1f} s in")
            pull_done = push_done = pull_fresh = push_fresh = push_visible = None
            limit = at + self.args.city_seconds + self.args.fresh_limit
            while time.monotonic() < limit and (pull_fresh is None or push_fresh is None):
                await asyncio.sleep(1.0)
                now = time.monotonic()
                if pull_done is None and pull.returncode is not None:
                    pull_done = now
                    out = (await pull.stdout.read() if pull.stdout else b"").decode(errors="replace").strip()
                    note(f"pull finished in {pull_done - started:.1f} s: {out[-300:]}")
                if pull_done is not None and pull_fresh is None and await self._pull_stale(conn) == 0:
                    pull_fresh = now
                    note(f"pull fresh {pull_fresh - pull_done:.1f} s after it finished")
                if push_done is None and await self._push_pending(conn, policy_id, targeted) == 0:
                    push_done = now
                    note(f"push delivered in {push_done - pushed:.1f} s")
                if push_visible is None and await self._push_stale(conn, policy_id) == 0:
                    push_visible = time.monotonic()
                    note(f"push shown on every sampled scan {push_visible - pushed:.1f} s after it started")
                if push_done is not None and push_fresh is None and push_visible is not None:
                    push_fresh = max(push_done, push_visible)
                    note(f"push fresh {push_fresh - push_done:.1f} s after it was delivered")
            if pull.returncode is None:
                pull.kill()
                await pull.wait()
            self.figures = {
                "source": self.name,
                "inspections": self.args.inspections,
                "pull_started_s": round(started - at, 1),
                "pull_seconds": None if pull_done is None else round(pull_done - started, 1),
                "pull_exit": pull.returncode,
                "pull_touched_shops": await conn.fetchval(
                    "SELECT count(DISTINCT shop_id) FROM inspection WHERE source = $1", self.name
                ),
                "pull_fresh_after_s": None
                if pull_fresh is None or pull_done is None
                else round(pull_fresh - pull_done, 1),
                "push_trade": self.trade,
                "push_targeted": targeted,
                "push_started_s": round(pushed - at, 1),
                "push_seconds": None if push_done is None else round(push_done - pushed, 1),
                "push_shown_after_start_s": None if push_visible is None else round(push_visible - pushed, 1),
                "push_fresh_after_s": None
                if push_fresh is None or push_done is None
                else round(push_fresh - push_done, 1),
                "pull_ended_s": None if pull_done is None else round(pull_done - at, 1),
                "push_ended_s": None if push_done is None else round(push_done - at, 1),
                "fresh_definition": "pull: no changed shop in profile_dirty and each one's"
                " shop_profile.rebuilt_at >= its rows' created_at; push: the citizen JSON of"
                f" {PUSH_SAMPLE} random reached shops, scanned through the service, lists the policy",
            }
        finally:
            await conn.execute("UPDATE feed_source SET enabled = false WHERE name = $1", self.name)
            await conn.close()

    async def _push(self, conn: asyncpg.Connection) -> tuple[int, int]:
        self.trade, _ = await catering_trade(conn)
        district = await conn.fetchval("SELECT code FROM area WHERE level = 'district' ORDER BY id LIMIT 1")
        admin = await conn.fetchval(
            "SELECT id FROM account WHERE role = 'admin' AND disabled_at IS NULL ORDER BY id LIMIT 1"
        )
        if admin is None:
            admin = await conn.fetchval(
                "INSERT INTO account (login, role, display_name, password_hash)"
                " VALUES ('bench-admin', 'admin', 'Bench admin', 'not-a-login') RETURNING id"
            )
        principal = auth.Principal(account_id=admin, login="bench", role="admin", session_id="bench")
        public_id = await policies.create(
            conn,
            principal,
            policies.PolicyIn(
                title=f"bench: city mix, to every {self.trade} shop",
                body_md="A policy sent by **bench/city_mix.py** during the city phase.",
                area_codes=[district],
                trades=[self.trade],
            ),
            tz=TZ,
        )
        policy_id: int = await conn.fetchval("SELECT id FROM policy WHERE public_id::text = $1", public_id)
        targeted: int = await db.queries.count_audience(
            conn,
            trades=[self.trade],
            area_ids=[await conn.fetchval("SELECT id FROM area WHERE code = $1", district)],
            filters={},
            today=datetime.datetime.now(datetime.UTC).date(),
        )
        return policy_id, targeted

    async def _pull_stale(self, conn: asyncpg.Connection) -> int:
        # a shop rebuilt after its rows were written is fresh, also when that was before the run
        # finished (pages commit one by one, and the drain follows them)
        stale: int = await conn.fetchval(
            "SELECT count(*) FROM (SELECT shop_id, max(created_at) AS written FROM inspection"
            " WHERE source = $1 GROUP BY shop_id) c"
            " LEFT JOIN shop_profile p ON p.shop_id = c.shop_id"
            " WHERE p.shop_id IS NULL OR p.rebuilt_at < c.written"
            " OR EXISTS (SELECT 1 FROM profile_dirty d WHERE d.shop_id = c.shop_id)",
            self.name,
        )
        return stale

    async def _push_pending(self, conn: asyncpg.Connection, policy_id: int, targeted: int) -> int:
        row = await conn.fetchrow(
            "SELECT count(*) AS n, count(*) FILTER (WHERE status = 'delivered') AS done"
            " FROM delivery WHERE policy_id = $1 AND channel = 'inbox'",
            policy_id,
        )
        assert row is not None
        return max(targeted, row["n"]) - row["done"]

    async def _push_stale(self, conn: asyncpg.Connection, policy_id: int) -> int:
        """Of a random sample of the shops the push reached, how many citizen answers (scanned
        through the service, as a citizen would) do not list the policy yet."""
        if self.sample is None:
            self.policy_public_id = await conn.fetchval(
                "SELECT public_id::text FROM policy WHERE id = $1", policy_id
            )
            rows = await conn.fetch(
                "SELECT s.code FROM delivery d JOIN shop s ON s.id = d.shop_id"
                " WHERE d.policy_id = $1 AND d.channel = 'inbox' ORDER BY random() LIMIT $2",
                policy_id,
                PUSH_SAMPLE,
            )
            self.sample = [r["code"] for r in rows]
        async with httpx.AsyncClient(base_url=self.base, timeout=10.0) as client:

            async def shown(code: str) -> bool:
                try:
                    answer = await client.get(f"/s/{code}", headers={"accept": "application/json"})
                except httpx.HTTPError:  # a service too busy to answer has not shown it yet
                    return False
                return answer.status_code == 200 and any(
                    n.get("id") == self.policy_public_id for n in answer.json().get("notices", [])
                )

            seen = await asyncio.gather(*(shown(code) for code in self.sample))
        return seen.count(False)


# -- the run ------------------------------------------------------------------------------------


class Check:
    def __init__(self, label: str, value: Any, target: str, passed: bool) -> None:
        self.label, self.value, self.target, self.passed = label, value, target, passed

    def line(self) -> str:
        return f"{self.label:<40} {self.value!s:>14}  {self.target:<28} {'PASS' if self.passed else 'FAIL'}"

    def as_json(self) -> dict[str, Any]:
        return {"value": self.value, "target": self.target, "pass": self.passed}


def below(value: float | None, limit: float) -> bool:
    return value is not None and value < limit


def search_capacity(load: Load, port: int, args: argparse.Namespace, watch: Any) -> float:
    """Searches a second the service serves (closed loop, every request from another address)."""
    if args.search_capacity:
        return float(args.search_capacity)
    time.sleep(1.0)
    ran = load.run(
        {"mode": "closed", "what": "search", "hot": False, "port": port, "connections": 32},
        args.warmup,
        args.seconds,
        args.timeout,
    )
    figures = kind_figures(ran["kinds"]["closed"], ran["seconds"])
    note(f"search capacity (closed loop, 32 connections): {figures['rps']:,.1f}/s ok,"
         f" p99 {figures['p99_ms']} ms, statuses {figures['statuses']}")  # fmt: skip
    return max(1.0, figures["rps"])


def bench(url: str, args: argparse.Namespace, stack: ExitStack, began: float) -> dict[str, Any]:
    shops = asyncio.run(scan_bench.prepare_database(url, args.shops, args.seed))
    data = asyncio.run(load_mix.prepare(url))
    ids, codes = asyncio.run(shop_table(url))
    fragments = asyncio.run(fragments_and_plans(url, args.explain))
    data_dir = Path(args.data_dir).resolve()
    logs = data_dir / "logs"
    inherited = {
        k: v
        for k, v in os.environ.items()
        if k not in {"MERCHANT_CODE_DATABASE_URL", "MERCHANT_CODE_TRUSTED_PROXIES", "MERCHANT_CODE_SCHEDULER"}
    }
    env = {
        **inherited,
        "MERCHANT_CODE_DATABASE_URL": url,
        "MERCHANT_CODE_SCHEDULER": "true",  # the pull's and the push's rebuilds run in the service
        "MERCHANT_CODE_TRUSTED_PROXIES": LOCAL,
        "MERCHANT_CODE_LOG_LEVEL": "warning",
        "MERCHANT_CODE_WORKERS": str(args.workers),
        "MERCHANT_CODE_DATA_DIR": str(data_dir),
    }
    port = scan_bench.free_port()
    base = f"http://{LOCAL}:{port}"
    log = logs / "city_mix_service.log"
    note(f"service on {base} ({args.workers} worker(s), scheduler on), log {log}")
    service = stack.enter_context(
        scan_bench.server(
            "service",
            [sys.executable, "-m", "merchant_code", "serve", "--host", LOCAL, "--port", str(port)],
            env,
            log,
        )
    )
    scan_bench.wait_ready("service", service, f"{base}/readyz", log)
    sample_codes = [codes[i * 14 : i * 14 + 13].decode() for i in range(0, len(ids), max(1, len(ids) // 15))][
        :15
    ]
    size = scan_bench.page_bytes(base, sample_codes)
    bare_port = scan_bench.free_port()
    bare_log = logs / "city_mix_bare.log"
    bare_env = {**inherited, "BARE_DATABASE_URL": url, "BARE_PAGE_BYTES": str(size)}
    bare = stack.enter_context(
        scan_bench.server(
            "bare app",
            [
                sys.executable,
                str(BENCH / "bare_app.py"),
                "--host",
                LOCAL,
                "--port",
                str(bare_port),
                "--workers",
                str(args.workers),
            ],
            bare_env,
            bare_log,
        )
    )
    scan_bench.wait_ready("bare app", bare, f"http://{LOCAL}:{bare_port}/plain", bare_log)
    load_mix.log_in(base, data["accounts"])
    spec = {
        "host": f"{LOCAL}:{port}",
        "port": port,
        "codes": codes,
        "ids": ids,
        "sample": data["sample"],
        "merchants": data["accounts"]["merchants"],
        "inspectors": data["accounts"]["inspectors"],
        "mix": (("scan", 1.0),),
        "fragments": fragments,
        "zipf": args.zipf,
        "zipf_seed": 17,
        "hot": args.hot,
        "timeout": args.timeout,
        "max_inflight": args.max_inflight,
    }
    probes = load_mix.probe(base, load_mix.Mix({**spec, "mix": load_mix.MIX}), dict(load_mix.MIX))
    note(f"one request of each kind answered: {probes}")

    feed_body, _, _ = lives_ingest.build_feed(
        asyncio.run(usccs(url, args.inspections)), args.inspections, args.violations_per, int(time.time())
    )
    feed = FeedServer(feed_body)
    stack.callback(feed.close)
    note(f"LIVES zip of {args.inspections:,} inspections ({len(feed_body) / 2**20:.1f} MB) at {feed.url}")

    watch = load_mix.CpuWatch({os.getpgrp(), service.pid, bare.pid}, scan_bench.postmaster(args))
    load = Load(spec, args.processes)
    stack.callback(load.close)
    phases: dict[str, Any] = {}

    def open_phase(name: str, rates: dict[str, float], seconds: float, events: Events | None = None) -> None:
        time.sleep(1.0)
        note(f"{name}: open loop {rates} for {seconds:g} s (+{args.warmup:g} s warm-up) ...")
        before, started = watch.snapshot(), time.monotonic()
        if events is not None:
            events.start(started + args.warmup + args.events_after)
        ran = load.run({"mode": "open", "port": port, "rates": rates}, args.warmup, seconds, args.timeout)
        foreign = watch.foreign_cores(before, watch.snapshot(), time.monotonic() - started)
        phases[name] = phase_figures(ran, foreign)
        show(name, phases[name])

    open_phase("scans_only", {"scan": RATES["scan"]}, args.seconds)
    events = Events(url, env, args, feed.url, base)
    open_phase("city", dict(RATES), args.city_seconds, events)
    events.join(time.monotonic() + args.fresh_limit + 30)

    ratios: dict[str, Any] = {}
    for hot in (True, False):
        label = "hot" if hot else "uniform"
        runs = {}
        for what, target in (("service", port), ("bare", bare_port)):
            time.sleep(1.0)
            ran = load.run(
                {"mode": "closed", "what": what, "hot": hot, "port": target, "connections": args.connections},
                args.warmup,
                args.closed_seconds,
                args.timeout,
            )
            runs[what] = kind_figures(ran["kinds"]["closed"], ran["seconds"])
            runs[what]["client_cores"] = ran["client_cores"]
            note(f"closed loop {label} {what}: {runs[what]['rps']:,.0f}/s p99 {runs[what]['p99_ms']} ms"
                 f" errors {runs[what]['errors']} (client {ran['client_cores']} cores)")  # fmt: skip
        bare_rps = runs["bare"]["rps"]
        ratios[label] = {
            **runs,
            "ratio": round(runs["service"]["rps"] / bare_rps, 3) if bare_rps else None,
        }

    capacity = search_capacity(load, port, args, watch)
    flood_rate = 10 * capacity
    open_phase("flood", {"scan": RATES["scan"], "flood": flood_rate}, args.seconds)
    return report(args, shops, data, fragments, probes, phases, events, ratios, capacity, flood_rate, began)


async def usccs(url: str, n: int) -> list[str]:
    conn: asyncpg.Connection = await asyncpg.connect(url)
    try:
        return [r["uscc"] for r in await conn.fetch("SELECT uscc FROM shop ORDER BY id LIMIT $1", n)]
    finally:
        await conn.close()


def report(
    args: argparse.Namespace,
    shops: int,
    data: dict[str, Any],
    fragments: dict[str, Any],
    probes: dict[str, int],
    phases: dict[str, Any],
    events: Events,
    ratios: dict[str, Any],
    capacity: float,
    flood_rate: float,
    began: float,
) -> dict[str, Any]:
    city = phases["city"]["kinds"]
    alone = phases["scans_only"]["kinds"]["scan"]
    flood = phases["flood"]["kinds"]
    ev = events.figures
    scan_errors = {name: p["kinds"].get("scan", {}).get("errors") for name, p in phases.items()}
    excess = flood.get("flood", {})
    answered = sum(excess.get("statuses", {}).values()) if excess else 0
    refused_ok = (
        bool(excess)
        and excess["refused"] > 0
        and excess["refused_with_retry_after"] == excess["refused"]
        and below(excess["refusal_p99_ms"], 50.0)
    )
    pull_ok = (
        ev.get("pull_exit") == 0
        and ev.get("pull_fresh_after_s") is not None
        and ev["pull_fresh_after_s"] <= 60
    )
    push_ok = ev.get("push_fresh_after_s") is not None and ev["push_fresh_after_s"] <= 60
    checks = {
        "scans_only_p99": Check(
            "scans only: scan p99 ms", alone["p99_ms"], "< 50", below(alone["p99_ms"], 50)
        ),
        "city_scan_p99": Check(
            "city: scan p99 ms", city["scan"]["p99_ms"], "< 50", below(city["scan"]["p99_ms"], 50)
        ),
        "scan_errors": Check(
            "scan errors (scans only, city, flood)",
            "/".join(str(v) for v in scan_errors.values()),
            "0 throughout",
            all(v == 0 for v in scan_errors.values()),
        ),
        "city_search_p99": Check(
            "city: search p99 ms", city["search"]["p99_ms"], "< 300", below(city["search"]["p99_ms"], 300)
        ),
        "city_writes_p99": Check(
            "city: writes p99 ms", city["writes"]["p99_ms"], "< 250", below(city["writes"]["p99_ms"], 250)
        ),
        "pull": Check(
            "pull: seconds / fresh after (s)",
            f"{ev.get('pull_seconds')}/{ev.get('pull_fresh_after_s')}",
            "ends, fresh <= 60 s",
            pull_ok,
        ),
        "push": Check(
            "push: seconds / fresh after (s)",
            f"{ev.get('push_seconds')}/{ev.get('push_fresh_after_s')}",
            "ends, fresh <= 60 s",
            push_ok,
        ),
        "hot_ratio": Check(
            "closed: hot-set scans / bare",
            ratios["hot"]["ratio"],
            ">= 3.0",
            (ratios["hot"]["ratio"] or 0) >= 3.0,
        ),
        "uniform_ratio": Check(
            "closed: uniform scans / bare",
            ratios["uniform"]["ratio"],
            ">= 1.0",
            (ratios["uniform"]["ratio"] or 0) >= 1.0,
        ),
        "flood_scan_p99": Check(
            "flood: scan p99 ms", flood["scan"]["p99_ms"], "< 100", below(flood["scan"]["p99_ms"], 100)
        ),
        "flood_refusals": Check(
            "flood: refusals 429/503 + Retry-After",
            f"{excess.get('refused', 0)}/{answered} p99 {excess.get('refusal_p99_ms')}",
            "all with Retry-After, p99 < 50",
            refused_ok,
        ),
    }
    passed = all(c.passed for c in checks.values())
    print(f"\npull and push: {ev or events.error}")
    print(
        f"search serving rate {capacity:,.1f}/s;"
        f" flood sent at {flood_rate:,.0f}/s from {FLOOD_ADDRESSES} addresses"
    )
    print()
    for check in checks.values():
        print(check.line())
    print(f"overall: {'PASS' if passed else 'FAIL'}")
    total = round(time.monotonic() - began, 1)
    note(f"{total} s in all")
    return {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": scan_bench.git_commit(),
        "machine": {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "processor": scan_bench._cpu_model(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
        },
        "shops": shops,
        "workers": args.workers,
        "client_processes": args.processes,
        "max_inflight_per_process": args.max_inflight,
        "rates": RATES,
        "zipf": args.zipf,
        "seconds": args.seconds,
        "city_seconds": args.city_seconds,
        "closed_seconds": args.closed_seconds,
        "closed_connections": args.connections,
        "hot_codes": args.hot,
        "migrations_applied": data["migrations_applied"],
        "probes": probes,
        "fragments": fragments,
        "phases": phases,
        "events": ev,
        "events_error": events.error,
        "closed_loop": ratios,
        "search_capacity_rps": capacity,
        "flood_rate_rps": flood_rate,
        "flood_addresses": FLOOD_ADDRESSES,
        "checks": {k: c.as_json() for k, c in checks.items()},
        "pass": passed,
        "total_seconds": total,
    }


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> None:
    began = time.monotonic()
    cores = os.cpu_count() or 1
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shops", type=int, default=1_000_000, help="shops to seed into an empty database")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--database-url", help="use this server instead of the embedded one")
    parser.add_argument("--pg-data", default=str(BENCH / "var" / "pg"), help="the embedded server's folder")
    parser.add_argument("--data-dir", default=str(BENCH / "var" / "data"), help="the service's data and logs")
    parser.add_argument(
        "--workers", type=int, default=cores, help="granian workers of the service and bare app"
    )
    parser.add_argument("--processes", type=int, default=1, help="load processes (rates split between them)")
    parser.add_argument("--max-inflight", type=int, default=512, help="requests waiting per load process")
    parser.add_argument(
        "--seconds", type=float, default=30.0, help="the scans-only, capacity and flood windows"
    )
    parser.add_argument("--city-seconds", type=float, default=120.0, help="the city phase's window")
    parser.add_argument("--events-after", type=float, default=5.0, help="pull and push start this far in (s)")
    parser.add_argument("--fresh-limit", type=float, default=120.0, help="wait this long after the city (s)")
    parser.add_argument("--closed-seconds", type=float, default=15.0, help="each closed-loop run")
    parser.add_argument("--connections", type=int, default=64, help="closed-loop connections")
    parser.add_argument("--warmup", type=float, default=3.0, help="before each window (not measured)")
    parser.add_argument("--timeout", type=float, default=10.0, help="unanswered this long = timeout (s)")
    parser.add_argument("--inspections", type=int, default=100_000, help="the LIVES feed's inspections")
    parser.add_argument("--violations-per", type=int, default=1, help="violations per inspection in the feed")
    parser.add_argument("--zipf", type=float, default=1.1, help="the popular half's Zipf exponent")
    parser.add_argument("--hot", type=int, default=10_000, help="codes of the hot set (closed loop)")
    parser.add_argument("--explain", type=int, default=20, help="common fragments whose plan is recorded")
    parser.add_argument("--search-capacity", type=float, help="searches/s served (else measured)")
    args = parser.parse_args()

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        with ExitStack() as stack:
            if args.database_url:
                url = args.database_url
            else:
                note(f"embedded PostgreSQL in {args.pg_data}")
                url = stack.enter_context(embedded_postgres(Path(args.pg_data)))
            result = bench(url, args, stack, began)
    except KeyboardInterrupt:
        note("interrupted: servers and database stopped")
        sys.exit(130)
    except (RuntimeError, OSError, subprocess.CalledProcessError, StartupError, MigrationError) as exc:
        note(f"failed: {exc}")
        sys.exit(1)
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as out:
        out.write(json.dumps(result, ensure_ascii=False) + "\n")
    note(f"appended to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
