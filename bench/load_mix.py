"""Load: a mix of scans, searches, merchant updates and inspections at full scale, with and
without a flood of scans from one address.

    .venv/bin/python bench/load_mix.py                                   # 1,000,000 shops, both phases
    .venv/bin/python bench/load_mix.py --seconds 10 --flood off          # a quick look, no flood

Uses the database of bench/scan_bench.py (--pg-data, seeded there: 1,000,000 shops), applies
pending migrations, makes bench accounts (merchants owning a few shops each, inspectors over each
district; a new password every run), and starts the service (`python -m merchant_code serve`,
--workers granian workers) on a free loopback port with the DEFAULT scan limits
(MERCHANT_CODE_SCAN_RATE 20/s, burst 120, per address and worker; the public API 600/min) and
MERCHANT_CODE_TRUSTED_PROXIES=127.0.0.1, so that the X-Forwarded-For the load generator sends
is who the client is, as behind a reverse proxy in production.

The load is closed-loop and keep-alive (bench/http_load.py's connection protocol), --connections
connections in --processes processes. Each request is drawn at random:

    90%  scan     GET /s/{code}, a code drawn uniformly from every shop; HTML or JSON half/half
     5%  search   GET /api/v1/shops: ?q= a 2-3 character piece of a real name, or ?trade=&area=
                  of a real shop, or ?lat=&lon= near a real shop (a third each)
     3%  update   PATCH /api/v1/merchant/shops/{code} {"opening_hours": ...} by the shop's owner
     2%  inspect  POST /api/v1/inspect/shops/{code}/inspections by an inspector covering the shop

Addresses: a connection stands for a reverse proxy carrying many people; each of its requests
comes from the next of its own --addresses-per-connection addresses (10.x.y.z, distinct across
connections). A closed-loop connection sends some hundred scans a second, so one fixed address
per connection would itself be a flood (--addresses-per-connection 1 shows that).

Phases, each bounded in time: a warm-up (not measured), then A: the mix alone, then B: the
same mix plus one flooding client (--flood-connections connections, in a process of its own,
one address) that sends scans back to back. Reported per kind and phase: requests/s, p50/p95/
p99/max (ms, exact over every sample) and the statuses (any 5xx is a failure); for the flood,
how many of its scans were answered 200 and how many 429; and the others' slowdown: their scan
p99 (and p50, and throughput) in B over A. One JSON line is appended to
bench/results/load_mix.jsonl.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import io
import json
import multiprocessing
import os
import platform
import random
import secrets
import signal
import subprocess
import sys
import time
from array import array
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack, suppress
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import quote

import http_load
import httpx
import scan_bench

from merchant_code import db, migrate
from merchant_code.auth import hash_password
from merchant_code.embedded import embedded_postgres
from merchant_code.errors import StartupError
from merchant_code.migrate import MigrationError

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results" / "load_mix.jsonl"
LOCAL = "127.0.0.1"
OTHER_BENCHES = r"bench/(scan_bench|lives_ingest|policy_push)"

# (kind, share): the kinds a request is drawn from
MIX = (("scan", 0.90), ("search", 0.05), ("update", 0.03), ("inspect", 0.02))
# what is measured, and which measured kinds make up each reported kind
SUBKINDS = {
    "scan": ("scan_html", "scan_json"),
    "search": ("search_name", "search_area", "search_near"),
    "update": ("update",),
    "inspect": ("inspect",),
}
HOURS = ("09:00-21:00", "08:30-22:00", "10:00-20:00", "07:00-23:00", "09:30-21:30", "00:00-24:00")
FLOOD_ADDRESS = "198.51.100.7"  # documentation range: never one of the mix's 10.x.y.z
MERCHANTS, SHOPS_EACH, INSPECTORS = 16, 4, 4
SAMPLE_PERCENT = 2.0  # of all shops, for names, places and the accounts' shops
DEFAULT_SCAN_RATE, DEFAULT_SCAN_BURST, PUBLIC_PER_MINUTE = 20.0, 120, 600


def note(message: str) -> None:
    print(f"[load_mix] {message}", flush=True)


# -- the database -----------------------------------------------------------------------------


async def prepare(url: str) -> dict[str, Any]:
    """Migrate; every shop's code; a sample of shops; the bench accounts (made or refreshed)."""
    conn = await db.connect(url)
    try:
        started = time.perf_counter()
        applied = await migrate.migrate(conn)
        migrated = round(time.perf_counter() - started, 1)
        if applied:
            note(f"applied {len(applied)} migration(s) in {migrated} s: {', '.join(applied)}")
        shops: int = await conn.fetchval("SELECT count(*) FROM shop")
        if shops == 0:
            raise RuntimeError("the database has no shops: seed it with bench/scan_bench.py first")
        started = time.perf_counter()
        out = io.BytesIO()
        await conn.copy_from_query("SELECT code FROM shop", output=out)
        codes = out.getvalue()
        if len(codes) != 14 * shops:
            raise RuntimeError("shop codes are not all 13 characters: cannot pack them")
        note(f"{shops:,} shop codes loaded in {time.perf_counter() - started:.1f} s")
        percent = min(100.0, max(SAMPLE_PERCENT, 100 * 5000 / shops))  # 20,000 of a million
        rows = await conn.fetch(
            "SELECT s.id, s.code, s.name, s.trade, a.path, s.lat, s.lon, t.food"
            f" FROM shop s TABLESAMPLE BERNOULLI ({percent:.4f}) REPEATABLE (42)"
            " JOIN area a ON a.id = s.area_id JOIN trade t ON t.code = s.trade"
            " WHERE s.status = 'active'"
        )
        if len(rows) < MERCHANTS * SHOPS_EACH:
            raise RuntimeError(f"too few active shops sampled ({len(rows)})")
        sample = [dict(r) for r in rows]
        accounts = await bench_accounts(conn, sample)
        return {
            "shops": shops,
            "codes": codes,
            "sample": sample,
            "accounts": accounts,
            "migrations_applied": applied,
            "migration_seconds": migrated,
        }
    finally:
        await conn.close()


async def bench_accounts(conn: Any, sample: list[dict[str, Any]]) -> dict[str, Any]:
    """Merchants owning SHOPS_EACH shops each (the same shops run after run) and inspectors whose
    area is a district: made once, given a new password every run (so it is never kept)."""
    password = secrets.token_urlsafe(18)
    hashed = hash_password(password)
    rng = random.Random(7)
    pool = list(sample)
    rng.shuffle(pool)
    merchants: list[dict[str, Any]] = []
    async with conn.transaction():
        for n in range(1, MERCHANTS + 1):
            login = f"bench-mix-merchant-{n:02d}"
            account_id = await upsert_account(conn, login, "merchant", None, hashed)
            owned = await conn.fetch(
                "SELECT s.code FROM account_shop x JOIN shop s ON s.id = x.shop_id"
                " WHERE x.account_id = $1 ORDER BY s.code",
                account_id,
            )
            codes = [r["code"] for r in owned]
            while len(codes) < SHOPS_EACH:
                shop = pool.pop()
                await conn.execute(
                    "INSERT INTO account_shop (account_id, shop_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    account_id,
                    shop["id"],
                )
                codes.append(shop["code"])
            merchants.append({"login": login, "codes": codes})
        districts = await conn.fetch("SELECT code, path FROM area WHERE level = 'district' ORDER BY code")
        inspectors: list[dict[str, Any]] = []
        for n in range(1, INSPECTORS + 1):
            district = districts[(n - 1) % len(districts)]
            login = f"bench-mix-inspector-{n:02d}"
            await upsert_account(conn, login, "inspector", district["code"], hashed)
            shops = [
                (s["code"], s["food"])
                for s in sample
                if s["path"] == district["path"] or s["path"].startswith(district["path"] + ".")
            ]
            if shops:
                inspectors.append({"login": login, "shops": shops})
    if not inspectors:
        raise RuntimeError("no sampled shop lies in a district: no inspector can file inspections")
    return {"password": password, "merchants": merchants, "inspectors": inspectors}


async def upsert_account(conn: Any, login: str, role: str, area_code: str | None, hashed: str) -> int:
    account_id: int = await conn.fetchval(
        "INSERT INTO account (login, role, area_id, display_name, password_hash)"
        " VALUES ($1, $2, (SELECT id FROM area WHERE code = $3), $4, $5)"
        " ON CONFLICT (login) DO UPDATE SET password_hash = EXCLUDED.password_hash,"
        " role = EXCLUDED.role, area_id = EXCLUDED.area_id, disabled_at = NULL"
        " RETURNING id",
        login,
        role,
        area_code,
        "压测账号",
        hashed,
    )
    return account_id


def log_in(base: str, accounts: dict[str, Any]) -> None:
    """A bearer token for every bench account (right passwords: no throttling)."""
    with httpx.Client(base_url=base, timeout=30) as client:
        for account in accounts["merchants"] + accounts["inspectors"]:
            answer = client.post(
                "/api/v1/auth/login", json={"login": account["login"], "password": accounts["password"]}
            )
            if answer.status_code != 200:
                raise RuntimeError(f"login {account['login']}: {answer.status_code} {answer.text[:300]}")
            account["token"] = answer.json()["token"]


# -- what a connection sends ------------------------------------------------------------------


class Mix:
    """Builds each request at random (pre-encoding them all is not possible: a million codes,
    and every request carries the address of the person behind the proxy)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.host = spec["host"]
        self.codes: bytes = spec["codes"]
        self.count = len(self.codes) // 14
        self.sample: list[dict[str, Any]] = spec["sample"]
        self.names = [s["name"] for s in self.sample if s["name"]]
        self.placed = [s for s in self.sample if s["lat"] is not None and s["lon"] is not None]
        self.merchants = [(m["token"], m["codes"]) for m in spec["merchants"]]
        self.inspectors = [(i["token"], i["shops"]) for i in spec["inspectors"]]
        kinds, shares = zip(*spec["mix"], strict=True)
        self.kinds: tuple[str, ...] = kinds
        total = sum(shares)
        running, bounds = 0.0, []
        for share in shares:
            running += share / total
            bounds.append(running)
        last = max(i for i, share in enumerate(shares) if share > 0)
        bounds[last:] = [1.0] * (len(bounds) - last)  # rounding never draws a kind left out
        self.bounds = bounds

    def code(self, rng: random.Random) -> str:
        at = rng.randrange(self.count) * 14
        return self.codes[at : at + 13].decode()

    def get(self, path: str, address: str, accept: str) -> bytes:
        return (
            f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\nUser-Agent: load_mix\r\nAccept: {accept}\r\n"
            f"Accept-Language: zh-CN,zh;q=0.9\r\nX-Forwarded-For: {address}\r\n\r\n"
        ).encode()

    def send(self, method: str, path: str, address: str, token: str, body: dict[str, Any]) -> bytes:
        data = json.dumps(body, separators=(",", ":")).encode()
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nUser-Agent: load_mix\r\n"
            f"Accept: application/json\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            f"Authorization: Bearer {token}\r\nX-Forwarded-For: {address}\r\n\r\n"
        )
        return head.encode() + data

    def scan(self, rng: random.Random, address: str) -> tuple[str, bytes]:
        path = f"/s/{self.code(rng)}"
        if rng.random() < 0.5:
            return "scan_json", self.get(path, address, "application/json")
        return "scan_html", self.get(path, address, "text/html,application/xhtml+xml")

    def request(self, rng: random.Random, address: str) -> tuple[str, bytes]:
        draw = rng.random()
        kind = self.kinds[-1]
        for name, bound in zip(self.kinds, self.bounds, strict=True):
            if draw < bound:
                kind = name
                break
        if kind == "scan":
            return self.scan(rng, address)
        if kind == "search":
            return self.search(rng, address)
        if kind == "update":
            token, codes = rng.choice(self.merchants)
            body = {"opening_hours": rng.choice(HOURS)}
            path = f"/api/v1/merchant/shops/{rng.choice(codes)}"
            return "update", self.send("PATCH", path, address, token, body)
        token, shops = rng.choice(self.inspectors)
        code, food = rng.choice(shops)
        score = rng.randint(80, 100)
        report: dict[str, Any] = {"kind": "routine", "result": "pass", "violations": [], "score": score}
        if food:
            report["grade"] = "A" if score >= 90 else "B"
        path = f"/api/v1/inspect/shops/{code}/inspections"
        return "inspect", self.send("POST", path, address, token, report)

    def search(self, rng: random.Random, address: str) -> tuple[str, bytes]:
        which = rng.randrange(3)
        if which == 0:
            name = rng.choice(self.names)
            size = min(len(name), rng.choice((2, 3)))
            start = rng.randrange(len(name) - size + 1)
            kind, query = "search_name", f"q={quote(name[start : start + size], safe='')}"
        elif which == 1:
            shop = rng.choice(self.sample)
            area = rng.choice(shop["path"].split("."))
            kind, query = "search_area", f"trade={shop['trade']}&area={area}"
        else:
            shop = rng.choice(self.placed)
            lat = shop["lat"] + rng.uniform(-0.003, 0.003)
            lon = shop["lon"] + rng.uniform(-0.003, 0.003)
            radius = rng.choice((500, 1000, 3000))
            kind, query = "search_near", f"lat={lat:.6f}&lon={lon:.6f}&radius_m={radius}"
        return kind, self.get(f"/api/v1/shops?{query}", address, "application/json")


class Tally:
    """One kind's figures in one process (turned into an http_load.Result at the end)."""

    __slots__ = ("bad", "failures", "latencies", "limited", "statuses")

    def __init__(self) -> None:
        self.statuses: Counter[int] = Counter()
        self.failures: Counter[str] = Counter()
        self.latencies: array[float] = array("d")
        self.limited: array[float] = array("d")  # latencies of the 429 answers
        self.bad = 0


class Opened(set):  # type: ignore[type-arg]
    """The live connections, counting every one opened (a connection the server closes is
    opened again, perhaps to another worker)."""

    def __init__(self) -> None:
        super().__init__()
        self.opened = 0

    def add(self, client: Any) -> None:
        self.opened += 1
        super().add(client)


class Shared:
    """The state of one process's connections during one phase."""

    def __init__(self, window: tuple[float, float]) -> None:
        self.t0, self.t1 = window
        self.stopping = False
        self.tallies: dict[str, Tally] = {}
        self.clients = Opened()

    def tally(self, kind: str) -> Tally:
        found = self.tallies.get(kind)
        if found is None:
            found = self.tallies[kind] = Tally()
        return found


class Lane:
    """One connection's view of the run, in the shape http_load's connection protocol and its
    connect loop expect (`next_request`, `completed`, `failed`, `stopping`, `exhausted`,
    `clients`): what it sends is drawn per request, what comes back is tallied by kind."""

    __slots__ = ("addresses", "flood", "kind", "mix", "next_address", "rng", "shared")

    def __init__(
        self, shared: Shared, mix: Mix, rng: random.Random, addresses: Sequence[str], flood: bool
    ) -> None:
        self.shared = shared
        self.mix = mix
        self.rng = rng
        self.addresses = addresses
        self.next_address = rng.randrange(len(addresses))
        self.flood = flood
        self.kind = "connect"

    @property
    def stopping(self) -> bool:
        return self.shared.stopping

    @property
    def exhausted(self) -> bool:
        return False

    @property
    def clients(self) -> set[http_load._Client]:
        return self.shared.clients

    def next_request(self) -> bytes | None:
        if self.shared.stopping:
            return None
        address = self.addresses[self.next_address]
        self.next_address = (self.next_address + 1) % len(self.addresses)
        if self.flood:
            self.kind = "flood"
            return self.mix.get(f"/s/{self.mix.code(self.rng)}", address, "text/html")
        self.kind, request = self.mix.request(self.rng, address)
        return request

    def completed(self, status: int, sent_at: float) -> None:
        now = time.monotonic()
        shared = self.shared
        if not shared.t0 <= now <= shared.t1:
            return
        tally = shared.tally(self.kind)
        tally.statuses[status] += 1
        if 200 <= status < 400:
            tally.latencies.append(now - sent_at)
        else:
            tally.bad += 1
            if status == 429:
                tally.limited.append(now - sent_at)

    def failed(self, reason: str) -> None:
        shared = self.shared
        if shared.t0 <= time.monotonic() <= shared.t1:
            shared.tally("connect" if reason.startswith("connect") else self.kind).failures[reason] += 1


def addresses_of(lane: int, per_lane: int) -> list[str]:
    """The addresses of one mix connection: its own block of 10.0.0.0/8."""
    first = 1 + lane * per_lane
    return [f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}" for n in range(first, first + per_lane)]


async def measure(
    mix: Mix, host: str, port: int, lanes: list[Lane], shared: Shared, timeout: float
) -> tuple[dict[str, Tally], float, int]:
    drivers = [asyncio.create_task(http_load._drive(lane, host, port)) for lane in lanes]  # type: ignore[arg-type]
    try:
        await asyncio.sleep(max(0.0, shared.t0 - time.monotonic()))
        cpu_from = time.process_time()
        await asyncio.sleep(max(0.0, shared.t1 - time.monotonic()))
        cpu = time.process_time() - cpu_from
    finally:
        shared.stopping = True
        now = time.monotonic()
        for client in list(shared.clients):
            if client.inflight and now - client.sent_at > timeout:
                shared.tally(client.run.kind).failures["timeout"] += 1
            if client.transport is not None:
                client.transport.abort()
        for task in drivers:
            task.cancel()
        await asyncio.gather(*drivers, return_exceptions=True)
    return shared.tallies, cpu, shared.clients.opened


def _worker(pipe: Connection, spec: dict[str, Any], lane_ids: list[int], flood: bool, seed: int) -> None:
    """A load process: the same connections' lanes for every phase the parent sends it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        mix = Mix(spec)
        rng = random.Random(seed)
        per_lane = spec["addresses_per_connection"]
        pools = [[FLOOD_ADDRESS] if flood else addresses_of(i, per_lane) for i in lane_ids]
        pipe.send("ready")
        while True:
            window = pipe.recv()
            if window is None:
                break
            shared = Shared(window)
            lanes = [Lane(shared, mix, random.Random(rng.random()), pool, flood) for pool in pools]
            tallies, cpu, opened = asyncio.run(
                measure(mix, LOCAL, spec["port"], lanes, shared, spec["timeout"])
            )
            plain = {
                kind: (dict(t.statuses), dict(t.failures), t.latencies, t.limited, t.bad)
                for kind, t in tallies.items()
            }
            pipe.send((plain, cpu, opened))
    except (EOFError, OSError):
        pass  # the parent gave up (interrupted)
    finally:
        pipe.close()


class Load:
    """The load processes, kept for every phase: P mix processes and, if asked, a flood one."""

    def __init__(self, spec: dict[str, Any], connections: int, processes: int, flood: int) -> None:
        self.context = multiprocessing.get_context("spawn")
        self.workers: list[tuple[str, multiprocessing.process.BaseProcess, Connection]] = []
        processes = max(1, min(processes, connections))
        shares = [
            connections // processes + (1 if i < connections % processes else 0) for i in range(processes)
        ]
        lane = 0
        groups: list[tuple[str, list[int]]] = []
        for share in shares:
            groups.append(("mix", list(range(lane, lane + share))))
            lane += share
        if flood:
            groups.append(("flood", list(range(flood))))
        for role, lane_ids in groups:
            mine, theirs = self.context.Pipe()
            seed = random.randrange(2**32)
            proc = self.context.Process(
                target=_worker, args=(theirs, spec, lane_ids, role == "flood", seed), daemon=True
            )
            proc.start()
            theirs.close()
            self.workers.append((role, proc, mine))
        for _, proc, pipe in self.workers:
            if not pipe.poll(120) or pipe.recv() != "ready":
                raise RuntimeError(f"load process {proc.pid} did not start")

    def run(self, warmup: float, seconds: float, flood: bool, timeout: float) -> dict[str, Any]:
        """One phase: every mix process (and the flood one if `flood`) over one window."""
        start = time.monotonic() + warmup
        window = (start, start + seconds)
        busy = [(role, proc, pipe) for role, proc, pipe in self.workers if flood or role == "mix"]
        for _, _, pipe in busy:
            pipe.send(window)
        parts: dict[str, list[tuple[dict[str, Any], float, int]]] = {"mix": [], "flood": []}
        for role, proc, pipe in busy:
            if not pipe.poll(warmup + seconds + timeout + 60):
                raise RuntimeError(f"load process {proc.pid} did not report")
            parts[role].append(pipe.recv())
        return {
            "seconds": seconds,
            "mix": combine([p[0] for p in parts["mix"]], seconds),
            "flood": combine([p[0] for p in parts["flood"]], seconds) if parts["flood"] else None,
            "mix_client_cores": round(sum(p[1] for p in parts["mix"]) / seconds, 2),
            "flood_client_cores": round(sum(p[1] for p in parts["flood"]) / seconds, 2) if flood else None,
            # connections opened in the phase (its warm-up included): more than asked = reconnects
            "mix_connections_opened": sum(p[2] for p in parts["mix"]),
            "flood_connections_opened": sum(p[2] for p in parts["flood"]) if flood else None,
        }

    def close(self) -> None:
        for _, _, pipe in self.workers:
            with suppress(OSError):
                pipe.send(None)
        for _, proc, pipe in self.workers:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
            pipe.close()


def combine(parts: list[dict[str, Any]], seconds: float) -> dict[str, tuple[http_load.Result, array[float]]]:
    """Per measured kind: one Result (samples of every process) and the 429 answers' latencies."""
    out: dict[str, tuple[http_load.Result, array[float]]] = {}
    for kind in sorted({k for part in parts for k in part}):
        result = http_load.Result(seconds=seconds, connections=0)
        limited: array[float] = array("d")
        for part in parts:
            if kind not in part:
                continue
            statuses, failures, latencies, limited_part, bad = part[kind]
            result.statuses.update(statuses)
            result.failures.update(failures)
            result.latencies.extend(latencies)
            result.errors_by_status += bad
            limited.extend(limited_part)
        out[kind] = (result, limited)
    return out


# -- figures ----------------------------------------------------------------------------------


def merged(phase: dict[str, tuple[http_load.Result, array[float]]], kinds: Sequence[str]) -> http_load.Result:
    parts = [phase[k][0] for k in kinds if k in phase]
    seconds = next(iter(phase.values()))[0].seconds if phase else 0.0
    result = http_load.Result(seconds=seconds, connections=0)
    for part in parts:
        result.statuses.update(part.statuses)
        result.failures.update(part.failures)
        result.latencies.extend(part.latencies)
        result.errors_by_status += part.errors_by_status
    return result


def figures(result: http_load.Result) -> dict[str, Any]:
    """A kind's figures: good answers a second, every answer a second, percentiles, statuses."""
    summary = result.summary()
    for key in ("connections", "processes", "client_cores", "seconds"):
        summary.pop(key, None)
    summary["requests"] = result.requests
    summary["all_rps"] = round(result.requests / result.seconds, 1) if result.seconds else 0.0
    summary["server_errors"] = sum(n for s, n in result.statuses.items() if s >= 500)
    return summary


def phase_figures(phase: dict[str, tuple[http_load.Result, array[float]]]) -> dict[str, Any]:
    kinds: dict[str, Any] = {}
    for kind, subkinds in SUBKINDS.items():
        kinds[kind] = figures(merged(phase, subkinds))
        if len(subkinds) > 1:
            kinds[kind]["by"] = {sub: figures(phase[sub][0]) for sub in subkinds if sub in phase}
    every = [k for subs in SUBKINDS.values() for k in subs] + ["connect"]
    kinds["all"] = figures(merged(phase, every))
    if "connect" in phase:
        kinds["connect"] = figures(phase["connect"][0])
    return kinds


def flood_figures(flood: dict[str, tuple[http_load.Result, array[float]]] | None) -> dict[str, Any] | None:
    if not flood or "flood" not in flood:
        return None
    result, limited = flood["flood"]
    out = figures(result)
    answered = result.requests
    out["ok_200"] = result.statuses.get(200, 0)
    out["limited_429"] = result.statuses.get(429, 0)
    out["limited_share"] = round(out["limited_429"] / answered, 4) if answered else None
    ordered = sorted(limited)

    def ms(q: float) -> float | None:
        if not ordered:
            return None
        return round(ordered[max(1, -(-int(q * len(ordered)) // 100)) - 1] * 1000, 2)

    out["limited_p50_ms"], out["limited_p99_ms"] = ms(50), ms(99)
    return out


def ratio(b: float | None, a: float | None) -> float | None:
    if a is None or b is None or a == 0:
        return None
    return round(b / a, 3)


def slowdown(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """B (with the flood) over A (without) for the other clients: > 1 is slower (rps: < 1)."""
    out: dict[str, Any] = {}
    for kind in ("scan", "all"):
        out[kind] = {
            "p50_ratio": ratio(b[kind]["p50_ms"], a[kind]["p50_ms"]),
            "p95_ratio": ratio(b[kind]["p95_ms"], a[kind]["p95_ms"]),
            "p99_ratio": ratio(b[kind]["p99_ms"], a[kind]["p99_ms"]),
            "rps_ratio": ratio(b[kind]["rps"], a[kind]["rps"]),
        }
    return out


def table(name: str, kinds: dict[str, Any]) -> None:
    print(f"\nphase {name}")
    print(
        f"  {'kind':<12} {'req/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}"
        f" {'ok':>9}  statuses"
    )

    def show(label: str, f: dict[str, Any]) -> None:
        def ms(key: str) -> str:
            return "-" if f[key] is None else f"{f[key]:.1f}"

        statuses = " ".join(f"{s}:{n}" for s, n in f["statuses"].items())
        failures = " ".join(f"{r}:{n}" for r, n in f["failures"].items())
        print(
            f"  {label:<12} {f['rps']:>9,.1f} {ms('p50_ms'):>8} {ms('p95_ms'):>8} {ms('p99_ms'):>8}"
            f" {ms('max_ms'):>8} {f['ok']:>9,}  {statuses}{'  failures ' + failures if failures else ''}"
        )

    for kind in ("scan", "search", "update", "inspect", "all"):
        show(kind, kinds[kind])
        for sub, f in kinds[kind].get("by", {}).items():
            show(" " + sub, f)


# -- the run ----------------------------------------------------------------------------------


class CpuWatch(scan_bench.CpuWatch):
    """scan_bench's watch, also counting as ours the CPU of our processes' children that ended
    during the run (the parallel query workers PostgreSQL starts for a search come and go between
    two snapshots; the postmaster reaps them, and their time lands in its cutime/cstime)."""

    def _ours(self, pid: int, stat: str) -> tuple[bool, int]:
        mine, ticks = super()._ours(pid, stat)
        if mine:
            fields = stat.rpartition(")")[2].split()
            ticks += int(fields[13]) + int(fields[14])
        return mine, ticks


def wait_for_others(limit: float) -> None:
    """The bench database is shared: wait while another benchmark uses it."""
    deadline = time.monotonic() + limit
    waited = False
    while True:
        found = subprocess.run(["pgrep", "-f", OTHER_BENCHES], capture_output=True, text=True, check=False)
        pids = [p for p in found.stdout.split() if p.strip() and int(p) != os.getpid()]
        if not pids:
            if waited:
                note("the other benchmark has finished")
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"another benchmark (pid {', '.join(pids)}) still runs after {limit:.0f} s")
        if not waited:
            note(f"another benchmark is running (pid {', '.join(pids)}): waiting for it")
            waited = True
        time.sleep(5)


def probe(base: str, mix: Mix, shares: dict[str, float]) -> dict[str, int]:
    """One request of every measured kind before the load: each must succeed (status by kind)."""
    rng = random.Random(1)
    wanted = {sub for kind, subs in SUBKINDS.items() if shares.get(kind, 0) > 0 for sub in subs}
    seen: dict[str, int] = {}
    with httpx.Client(base_url=base, timeout=30) as client:
        for n in range(2000):
            if not wanted - set(seen):
                break
            address = f"10.254.{n // 256}.{n % 256}"
            kind, raw = mix.request(rng, address)
            if kind in seen:
                continue
            head, _, body = raw.partition(b"\r\n\r\n")
            first, *lines = head.decode().split("\r\n")
            method, path, _ = first.split(" ")
            headers = dict(line.split(": ", 1) for line in lines)
            headers.pop("Host", None)
            headers.pop("Content-Length", None)
            answer = client.request(method, path, headers=headers, content=body or None)
            if not 200 <= answer.status_code < 300:
                raise RuntimeError(f"probe {kind} {method} {path}: {answer.status_code} {answer.text[:400]}")
            seen[kind] = answer.status_code
    if missing := wanted - set(seen):
        raise RuntimeError(f"probe: no request of {sorted(missing)} drawn")
    return seen


def commit() -> str | None:
    """The checked-out commit, read from .git (no git command is run)."""
    try:
        head = (ROOT / ".git" / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head[:7]
        ref = head[5:]
        path = ROOT / ".git" / ref
        if path.exists():
            return path.read_text().strip()[:7]
        for line in (ROOT / ".git" / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line[:7]
    except OSError:
        pass
    return None


def bench(url: str, args: argparse.Namespace, stack: ExitStack, began: float) -> dict[str, Any]:
    data = asyncio.run(prepare(url))
    accounts = data["accounts"]
    data_dir = Path(args.data_dir).resolve()
    log = data_dir / "logs" / "load_mix_service.log"
    inherited = {
        k: v
        for k, v in os.environ.items()
        if k not in {"MERCHANT_CODE_DATABASE_URL", "MERCHANT_CODE_SCAN_RATE", "MERCHANT_CODE_SCAN_BURST"}
        and k != "MERCHANT_CODE_TRUSTED_PROXIES"
    }
    env = {
        **inherited,
        "MERCHANT_CODE_DATABASE_URL": url,
        "MERCHANT_CODE_SCHEDULER": "false",  # no feed pulls or jobs during the measure
        "MERCHANT_CODE_TRUSTED_PROXIES": LOCAL,
        "MERCHANT_CODE_LOG_LEVEL": "warning",
        "MERCHANT_CODE_WORKERS": str(args.workers),
        "MERCHANT_CODE_DATA_DIR": str(data_dir),
    }
    port = args.port or scan_bench.free_port()
    base = f"http://{LOCAL}:{port}"
    note(f"service on {base} ({args.workers} worker(s), default scan limits), log {log}")
    service = stack.enter_context(
        scan_bench.server(
            "service",
            [sys.executable, "-m", "merchant_code", "serve", "--host", LOCAL, "--port", str(port)],
            env,
            log,
        )
    )
    scan_bench.wait_ready("service", service, f"{base}/readyz", log)
    log_in(base, accounts)
    spec = {
        "host": f"{LOCAL}:{port}",
        "port": port,
        "codes": data["codes"],
        "sample": data["sample"],
        "merchants": accounts["merchants"],
        "inspectors": accounts["inspectors"],
        "mix": args.mix,
        "addresses_per_connection": args.addresses_per_connection,
        "timeout": args.timeout,
    }
    probes = probe(base, Mix(spec), dict(args.mix))
    note(f"one request of each kind answered: {probes}")
    flood_modes = {"both": (False, True), "on": (True,), "off": (False,)}[args.flood]
    watch = CpuWatch({os.getpgrp(), service.pid}, scan_bench.postmaster(args))
    load = Load(spec, args.connections, args.processes, args.flood_connections if True in flood_modes else 0)
    stack.callback(load.close)
    note(
        f"load: {args.connections} connections in {args.processes} process(es)"
        + (
            f", flood: {args.flood_connections} connection(s) from {FLOOD_ADDRESS}"
            if True in flood_modes
            else ""
        )
    )
    note(f"warm-up: {args.warmup:g} s of the mix (not measured) ...")
    load.run(0.0, args.warmup, False, args.timeout)
    phases: dict[str, Any] = {}
    foreign: dict[str, float | None] = {}
    clients: dict[str, Any] = {}
    raw_flood = None
    for flooding in flood_modes:
        name = "B" if flooding else "A"
        time.sleep(1.0)
        note(f"phase {name}: the mix{' + the flood' if flooding else ''}, {args.seconds:g} s ...")
        before, started = watch.snapshot(), time.monotonic()
        ran = load.run(1.0, args.seconds, flooding, args.timeout)
        foreign[name] = watch.foreign_cores(before, watch.snapshot(), time.monotonic() - started)
        phases[name] = phase_figures(ran["mix"])
        clients[name] = {
            "mix_cores": ran["mix_client_cores"],
            "flood_cores": ran["flood_client_cores"],
            "mix_connections_opened": ran["mix_connections_opened"],
            "flood_connections_opened": ran["flood_connections_opened"],
        }
        if flooding:
            raw_flood = ran["flood"]
        table(name, phases[name])
        if (foreign[name] or 0.0) > 0.1:
            note(f"phase {name}: other processes took {foreign[name]:.2f} cores: figures are low and noisy")
    flood = flood_figures(raw_flood)
    if flood is not None:
        print(
            f"\nflood from {FLOOD_ADDRESS}: {flood['requests']:,} answered ({flood['all_rps']:,.0f}/s):"
            f" {flood['ok_200']:,} x 200, {flood['limited_429']:,} x 429"
            f" ({100 * (flood['limited_share'] or 0):.2f}% limited; a 429 takes p50"
            f" {flood['limited_p50_ms']} ms, p99 {flood['limited_p99_ms']} ms;"
            f" {clients['B']['flood_connections_opened']} connection(s) opened; its process used"
            f" {clients['B']['flood_cores']} core(s) of this machine, the mix's {clients['B']['mix_cores']})"
        )
    others = slowdown(phases["A"], phases["B"]) if {"A", "B"} <= set(phases) else None
    if others is not None:
        s = others["scan"]
        print(
            f"others' scans with/without the flood: p50 x{s['p50_ratio']}, p95 x{s['p95_ratio']},"
            f" p99 x{s['p99_ratio']}, req/s x{s['rps_ratio']}"
        )
    return report(args, data, probes, phases, flood, others, foreign, clients, began)


def report(
    args: argparse.Namespace,
    data: dict[str, Any],
    probes: dict[str, int],
    phases: dict[str, Any],
    flood: dict[str, Any] | None,
    others: dict[str, Any] | None,
    foreign: dict[str, float | None],
    clients: dict[str, Any],
    began: float,
) -> dict[str, Any]:
    server_errors = sum(p["all"]["server_errors"] for p in phases.values())
    if flood is not None:
        server_errors += flood["server_errors"]
    failures = sum(sum(p["all"]["failures"].values()) for p in phases.values())
    non_2xx = {
        name: {
            kind: {s: n for s, n in p[kind]["statuses"].items() if not 200 <= int(s) < 300}
            for kind in SUBKINDS
            if any(not 200 <= int(s) < 300 for s in p[kind]["statuses"])
        }
        for name, p in phases.items()
    }
    others_limited = sum(p["all"]["statuses"].get("429", 0) for p in phases.values())
    checks: dict[str, Any] = {
        "no_5xx": {"value": server_errors, "pass": server_errors == 0},
        "no_lost_requests": {"value": failures, "pass": failures == 0},
        "others_never_429": {"value": others_limited, "pass": others_limited == 0},
    }
    if flood is not None:
        checks["flood_limited"] = {
            "value": flood["limited_share"],
            "target": ">= 0.9 of its scans answered 429",
            "pass": (flood["limited_share"] or 0) >= 0.9,
        }
    if others is not None:
        p99 = others["scan"]["p99_ratio"]
        checks["others_scan_p99_ratio"] = {
            "value": p99,
            "target": f"<= {args.max_slowdown:g} (this bench's tolerance)",
            "pass": p99 is not None and p99 <= args.max_slowdown,
        }
    passed = all(c["pass"] for c in checks.values())
    print()
    for key, check in checks.items():
        outcome = "PASS" if check["pass"] else "FAIL"
        print(f"{key:<24} {check['value']!s:>10}  {check.get('target', '')}  {outcome}")
    if any(non_2xx.values()):
        print(f"non-2xx answers by phase and kind: {non_2xx}")
    print(f"overall: {'PASS' if passed else 'FAIL'}")
    total = round(time.monotonic() - began, 1)
    note(f"{total} s in all")
    return {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": commit(),
        "machine": {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "processor": scan_bench._cpu_model(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
        },
        "shops": data["shops"],
        "workers": args.workers,
        "connections": args.connections,
        "client_processes": args.processes,
        "addresses_per_connection": args.addresses_per_connection,
        "flood_connections": args.flood_connections if flood is not None else 0,
        "flood_address": FLOOD_ADDRESS if flood is not None else None,
        "seconds": args.seconds,
        "warmup": args.warmup,
        "mix": dict(args.mix),
        "limits": {
            "scan_rate_per_s": DEFAULT_SCAN_RATE,
            "scan_burst": DEFAULT_SCAN_BURST,
            "public_api_per_minute": PUBLIC_PER_MINUTE,
            "per": "client address and worker process",
        },
        "accounts": {
            "merchants": len(data["accounts"]["merchants"]),
            "shops_each": SHOPS_EACH,
            "inspectors": len(data["accounts"]["inspectors"]),
        },
        "migrations_applied": data["migrations_applied"],
        "migration_seconds": data["migration_seconds"],
        "probes": probes,
        "phases": phases,
        "flood": flood,
        # the other clients' figures with the flood over without it (p99 > 1: slower)
        "others_slowdown": others,
        "non_2xx": non_2xx,
        # cores taken by processes outside the benchmark during each phase (0 on a quiet machine)
        "foreign_cores": foreign,
        # the load generator: cores it used, connections it opened (per phase)
        "load_generator": clients,
        "total_seconds": total,
        "checks": checks,
        "pass": passed,
    }


def mix_shares(text: str) -> tuple[tuple[str, float], ...]:
    try:
        shares = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError("four numbers: scan,search,update,inspect") from None
    if len(shares) != len(MIX) or min(shares) < 0 or shares[0] <= 0:
        raise argparse.ArgumentTypeError("four shares, none negative, scans more than 0")
    total = sum(shares)
    return tuple((kind, round(share / total, 4)) for (kind, _), share in zip(MIX, shares, strict=True))


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> None:
    began = time.monotonic()
    cores = os.cpu_count() or 1
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="measured window of each phase")
    parser.add_argument("--warmup", type=float, default=5.0, help="the warm-up phase (not measured)")
    parser.add_argument("--connections", type=int, default=64, help="the mix's connections")
    parser.add_argument("--processes", type=int, default=max(1, cores // 4), help="the mix's load processes")
    parser.add_argument("--workers", type=int, default=cores, help="the service's granian workers")
    parser.add_argument(
        "--flood", choices=("both", "on", "off"), default="both", help="phases: A without and B with (both)"
    )
    parser.add_argument(
        "--flood-connections", type=int, default=16, help="the flooding client's connections (one address)"
    )
    parser.add_argument(
        "--addresses-per-connection",
        type=int,
        default=1024,
        help="addresses each mix connection's requests come from, in turn",
    )
    parser.add_argument("--max-slowdown", type=float, default=1.5, help="tolerated others' scan p99 B/A")
    parser.add_argument("--timeout", type=float, default=10.0, help="unanswered this long = lost (s)")
    parser.add_argument("--database-url", help="use this server instead of the embedded one")
    parser.add_argument("--pg-data", default=str(BENCH / "var" / "pg"), help="the embedded server's folder")
    parser.add_argument("--data-dir", default=str(BENCH / "var" / "data"), help="the service's data and logs")
    parser.add_argument("--port", type=int, default=0, help="service port (default: a free one)")
    parser.add_argument("--wait", type=float, default=1800, help="wait this long for another benchmark (s)")
    parser.add_argument(
        "--mix",
        type=mix_shares,
        default=MIX,
        help="percent of scans,searches,updates,inspections (default 90,5,3,2; 0 leaves a kind out)",
    )
    args = parser.parse_args()
    planned = args.warmup + (2 if args.flood == "both" else 1) * (args.seconds + 2)
    if planned > 240:
        parser.error(f"the phases would take {planned:.0f} s: keep the whole run under 5 minutes")
    if args.addresses_per_connection < 1 or args.connections * args.addresses_per_connection >= 2**24 - 2:
        parser.error("--addresses-per-connection: 1 .. 2**24 / --connections")

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        if not args.database_url:
            wait_for_others(args.wait)
            began = time.monotonic()
        with ExitStack() as stack:
            if args.database_url:
                url = args.database_url
            else:
                note(f"embedded PostgreSQL in {args.pg_data}")
                url = stack.enter_context(embedded_postgres(Path(args.pg_data)))
            result = bench(url, args, stack, began)
    except KeyboardInterrupt:
        note("interrupted: service and database stopped")
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
