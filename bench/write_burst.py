"""Bursts of anonymous writes against the service while citizens scan: does anything hang?

    .venv/bin/python bench/write_burst.py                      # the demo's 2,000 shops, bursts of 200
    .venv/bin/python bench/write_burst.py --burst 500 --seconds 20

One process tree: the embedded PostgreSQL in --pg-data (seeded once with the demo district), the
service (`python -m merchant_code serve`, --workers granian workers, the scheduler on, as in
the demo, MERCHANT_CODE_TRUSTED_PROXIES=127.0.0.1 so that each burst request can come from an
address of its own), and two client processes:

- the citizens: open-loop scans at --scan-rate a second over keep-alive connections, for random
  codes; a scan's latency runs from when it was due (so a stalled service cannot hide by
  slowing the client), plus `GET /readyz` every 100 ms;
- the attacker: every --every seconds, --burst anonymous writes sent at once, each on a new
  connection from its own address: complaints (JSON), reopen requests on a tracking page and
  failed logins, a third each.

Phase A: scans alone (--seconds); phase B: the same scans with the bursts (--seconds). Reported:
scan p50/p95/p99/max per phase, every /readyz status, each kind of write's statuses and slowest
answer, and any request that was not answered within 30 s (a hang). Target (issue 15): in B,
scan p99 < 100 ms, /readyz 200 throughout, no hang. One JSON line is appended to
bench/results/write_burst.jsonl.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import random
import subprocess
import sys
import time
from collections import Counter
from contextlib import ExitStack
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import scan_bench

from merchant_code.embedded import embedded_postgres

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results" / "write_burst.jsonl"
HANG = 30.0
WARM_UP = 5.0  # seconds of scans not measured while both client processes start


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def figures(seconds: list[float], statuses: Counter[int]) -> dict[str, Any]:
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        **{f"p{p}_ms": round(v, 1) if (v := percentile(ms, p)) is not None else None for p in (50, 95, 99)},
        "max_ms": round(max(ms), 1) if ms else None,
    }


# -- the citizens -------------------------------------------------------------------------------


async def _scanner(base: str, codes: list[str], rate: float, phases: list[float], out: Connection) -> None:
    lanes = 16
    interval = lanes / rate
    results: list[list[tuple[float, int]]] = [[] for _ in phases]
    ready: list[list[int]] = [[] for _ in phases]
    start = time.monotonic()
    bounds = [start + sum(phases[: i + 1]) for i in range(len(phases))]

    def phase_of(t: float) -> int | None:
        return next((i for i, end in enumerate(bounds) if t < end), None)

    async def lane(n: int) -> None:
        rng = random.Random(n)
        async with httpx.AsyncClient(base_url=base, timeout=HANG) as client:
            due = start + n * interval / lanes
            while (phase := phase_of(due)) is not None:
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                try:
                    status = (await client.get(f"/s/{rng.choice(codes)}")).status_code
                except httpx.TimeoutException:
                    status = 0
                results[phase].append((time.monotonic() - due, status))
                due += interval

    async def readiness() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=HANG) as client:
            while (phase := phase_of(time.monotonic())) is not None:
                try:
                    status = (await client.get("/readyz")).status_code
                except httpx.TimeoutException:
                    status = 0
                ready[phase].append(status)
                await asyncio.sleep(0.1)

    await asyncio.gather(readiness(), *(lane(n) for n in range(lanes)))
    out.send({"scans": results, "ready": ready})


def scanner(base: str, codes: list[str], rate: float, phases: list[float], out: Connection) -> None:
    asyncio.run(_scanner(base, codes, rate, phases, out))


# -- the attacker -------------------------------------------------------------------------------


async def _burst(
    base: str, codes: list[str], numbers: list[str], size: int, n: int
) -> list[tuple[str, int, float]]:
    async def one(i: int) -> tuple[str, int, float]:
        kind = ("complaint", "reopen", "login")[i % 3]
        address = f"10.{n % 250}.{i // 250}.{i % 250 + 1}"
        started = time.monotonic()
        async with httpx.AsyncClient(base_url=base, timeout=HANG, headers={"X-Forwarded-For": address}) as c:
            try:
                if kind == "complaint":
                    body = {"category": "hygiene", "text": f"突发检查 {n}-{i}"}
                    answer = await c.post(f"/api/v1/shops/{random.choice(codes)}/complaints", json=body)
                elif kind == "reopen":
                    answer = await c.post(
                        f"/track/{random.choice(numbers)}/reopen", json={"reason": "问题还没有解决"}
                    )
                else:
                    answer = await c.post(
                        "/api/v1/auth/login", json={"login": f"nobody{i}", "password": "x" * 12}
                    )
                status = answer.status_code
            except httpx.TimeoutException:
                status = 0
        return kind, status, time.monotonic() - started

    return await asyncio.gather(*(one(i) for i in range(size)))


async def _attacker(
    base: str, codes: list[str], size: int, every: float, wait: float, seconds: float, out: Connection
) -> None:
    numbers = []
    async with httpx.AsyncClient(base_url=base, timeout=HANG) as c:  # tracking numbers to reopen
        for i, code in enumerate(codes[:50]):  # a closed shop takes no complaint (422)
            first = await c.post(
                f"/api/v1/shops/{code}/complaints",
                json={"category": "other", "text": "基准测试的投诉"},
                headers={"X-Forwarded-For": f"192.0.2.{i + 1}"},
            )
            if first.status_code == 201:
                numbers.append(first.json()["tracking_number"])
    assert numbers, "no complaint was taken before the bursts"
    await asyncio.sleep(wait)
    end = time.monotonic() + seconds
    done: list[tuple[str, int, float]] = []
    n = 0
    while time.monotonic() < end:
        began = time.monotonic()
        done.extend(await _burst(base, codes, numbers, size, n))
        n += 1
        await asyncio.sleep(max(0.0, every - (time.monotonic() - began)))
    out.send({"writes": done, "bursts": n})


def attacker(
    base: str, codes: list[str], size: int, every: float, wait: float, seconds: float, out: Connection
) -> None:
    asyncio.run(_attacker(base, codes, size, every, wait, seconds, out))


# -- the run ------------------------------------------------------------------------------------


def bench(url: str, args: argparse.Namespace, stack: ExitStack) -> dict[str, Any]:
    shops = asyncio.run(scan_bench.prepare_database(url, args.shops, 2026))
    codes = [code for _, code in asyncio.run(scan_bench.sample_shops(url, min(shops, 5000)))]
    port = scan_bench.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MERCHANT_CODE_")}
    env.update(
        MERCHANT_CODE_DATABASE_URL=url,
        MERCHANT_CODE_PORT=str(port),
        MERCHANT_CODE_WORKERS=str(args.workers),
        MERCHANT_CODE_LOG_LEVEL="warning",
        MERCHANT_CODE_TRUSTED_PROXIES="127.0.0.1",
        MERCHANT_CODE_SCAN_RATE="0",  # the scanner stands for many citizens behind one address
        MERCHANT_CODE_DATA_DIR=str(BENCH / "var" / "burst-data"),
    )
    log = BENCH / "var" / "write_burst.log"
    proc = stack.enter_context(
        scan_bench.server("service", [sys.executable, "-m", "merchant_code", "serve"], env, log)
    )
    base = f"http://127.0.0.1:{port}"
    scan_bench.wait_ready("service", proc, f"{base}/readyz", log)
    with httpx.Client(base_url=base, timeout=HANG) as warm:  # each worker's cache, every shop
        for code in codes * args.workers:
            warm.get(f"/s/{code}")
    scan_in, scan_out = multiprocessing.Pipe(duplex=False)
    burst_in, burst_out = multiprocessing.Pipe(duplex=False)
    phases = [WARM_UP, args.seconds, args.seconds]  # the first unmeasured: both clients starting
    scanning = multiprocessing.Process(target=scanner, args=(base, codes, args.scan_rate, phases, scan_out))
    bursting = multiprocessing.Process(
        target=attacker,
        args=(base, codes, args.burst, args.every, WARM_UP + args.seconds, args.seconds, burst_out),
    )
    scanning.start()
    bursting.start()
    seen = scan_in.recv()
    attacked = burst_in.recv()
    scanning.join()
    bursting.join()
    result: dict[str, Any] = {
        "bench": "write_burst",
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "shops": shops,
        "workers": args.workers,
        "scan_rate": args.scan_rate,
        "burst": args.burst,
        "every_s": args.every,
        "bursts": attacked["bursts"],
    }
    for name, scans, ready in zip(
        ("A_scans_alone", "B_with_bursts"), seen["scans"][1:], seen["ready"][1:], strict=True
    ):
        result[name] = {
            "scans": figures([s for s, _ in scans], Counter(code for _, code in scans)),
            "readyz": {str(k): v for k, v in Counter(ready).items()},
        }
    writes: dict[str, Any] = {}
    for kind in ("complaint", "reopen", "login"):
        mine = [(status, s) for k, status, s in attacked["writes"] if k == kind]
        writes[kind] = figures([s for _, s in mine], Counter(status for status, _ in mine))
    result["writes"] = writes
    result["hangs"] = sum(1 for _, status, _ in attacked["writes"] if status == 0) + sum(
        1 for phase in seen["scans"] for _, status in phase if status == 0
    )
    b = result["B_with_bursts"]
    result["met"] = bool(
        b["scans"]["p99_ms"] is not None
        and b["scans"]["p99_ms"] < 100
        and set(b["readyz"]) == {"200"}
        and result["hangs"] == 0
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--shops", type=int, default=2000, help="shops to seed into an empty database (the demo's)"
    )
    parser.add_argument("--pg-data", default=str(BENCH / "var" / "pg-burst"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--scan-rate", type=float, default=200.0, help="citizens' scans a second")
    parser.add_argument("--burst", type=int, default=200, help="anonymous writes sent at once")
    parser.add_argument("--every", type=float, default=2.0, help="seconds between bursts")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each phase")
    args = parser.parse_args()
    with ExitStack() as stack:
        url = stack.enter_context(embedded_postgres(Path(args.pg_data)))
        result = bench(url, args, stack)
    print(json.dumps(result, ensure_ascii=False, indent=1))
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as out:
        out.write(json.dumps(result, ensure_ascii=False) + "\n")
    print(f"appended to {RESULTS.relative_to(BENCH.parent)}", file=sys.stderr)


if __name__ == "__main__":
    main()
