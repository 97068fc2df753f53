"""Benchmark: the scan page and the sticker image against bare Litestar baselines, over HTTP.

    .venv/bin/python bench/scan_bench.py --shops 1000000            # the issue's scale
    .venv/bin/python bench/scan_bench.py --shops 2000 --seconds 5 --pg-data /tmp/bench-pg   # smoke

One process tree: the embedded PostgreSQL in --pg-data (kept between runs, so a 1M-shop seed is
paid once; or --database-url), the service (`python -m merchant_code serve`, W granian workers)
and the baseline app (bench/bare_app.py, the same W) on free loopback ports, and the load
generator (bench/http_load.py, P processes, C keep-alive connections in all). In turn:

1. service `GET /s/{code}` for random codes  vs  bare `GET /bare/{id}` for the same shops' ids
   (one primary-key fetch + a Jinja2 page padded to the size of a real scan page);
2. if the service answers `GET /s/{code}/sticker.png`: cached stickers (every code fetched once
   first)  vs  bare `GET /plain`.

Targets (issue 4): scan rps / bare rps >= 1.0 and scan p99 < 50 ms at 64 connections; sticker rps
/ plain rps > 0.5. A table is printed and one JSON line appended to bench/results/scan.jsonl.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import asyncpg
import http_load
import httpx

from merchant_code import db, migrate
from merchant_code.district import seed_district
from merchant_code.embedded import embedded_postgres
from merchant_code.errors import StartupError
from merchant_code.migrate import MigrationError

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results" / "scan.jsonl"
HEADERS = ["Accept: text/html,application/xhtml+xml", "Accept-Language: zh-CN,zh;q=0.9"]
IMAGE_HEADERS = ["Accept: image/avif,image/webp,image/png,image/*;q=0.8"]
LOCAL = "127.0.0.1"


def note(message: str) -> None:
    print(f"[scan_bench] {message}", flush=True)


# -- database ---------------------------------------------------------------------------------


async def prepare_database(url: str, shops: int, seed: int) -> int:
    """Migrate; seed the district if the database has no shops. The number of shops in it."""
    conn = await db.connect(url)
    try:
        applied = await migrate.migrate(conn)
        if applied:
            note(f"applied {len(applied)} migration(s): {', '.join(applied)}")
        count: int = await conn.fetchval("SELECT count(*) FROM shop")
        if count == 0:
            note(f"seeding {shops:,} shops (once for this database)...")
            summary = await seed_district(
                conn,
                shops=shops,
                seed=seed,
                today=datetime.date.today(),
                progress=lambda m: print("   ", m, flush=True),
            )
            note(f"seeded {summary.shops:,} shops in {summary.seconds:.0f} s")
            count = summary.shops
        elif count != shops:
            note(
                f"the database already holds {count:,} shops, not {shops:,}: measuring those"
                " (use another --pg-data for another size; fewer than asked may be an interrupted seed)"
            )
        return count
    finally:
        await conn.close()


async def sample_shops(url: str, k: int) -> list[tuple[int, str]]:
    """K random shops (id, code), the same K for the same database."""
    conn: asyncpg.Connection = await asyncpg.connect(url)
    try:
        await conn.execute("SELECT setseed(0.42)")
        rows = await conn.fetch("SELECT id, code FROM shop ORDER BY random() LIMIT $1", k)
    finally:
        await conn.close()
    return [(r["id"], r["code"]) for r in rows]


async def profiles_missing(url: str) -> int:
    conn: asyncpg.Connection = await asyncpg.connect(url)
    try:
        missing: int = await conn.fetchval(
            "SELECT (SELECT count(*) FROM shop) - (SELECT count(*) FROM shop_profile)"
            " + (SELECT count(*) FROM profile_dirty)"
        )
    finally:
        await conn.close()
    return missing


def rebuild_profiles(env: dict[str, str], url: str, force: bool) -> dict[str, Any]:
    """`merchant-code profiles rebuild` when some profile is missing or stale (the seed builds
    them all), or when asked to (`--rebuild-profiles`, which also measures it)."""
    if not force and asyncio.run(profiles_missing(url)) == 0:
        note("every profile is current: no rebuild")
        return {"rebuilt": False}
    cli = [sys.executable, "-m", "merchant_code", "profiles"]
    note("merchant-code profiles rebuild ...")
    started = time.perf_counter()
    subprocess.run([*cli, "rebuild"], env=env, cwd=ROOT, check=True)
    seconds = time.perf_counter() - started
    note(f"profiles rebuilt in {seconds:.1f} s")
    return {"rebuilt": True, "seconds": round(seconds, 1)}


# -- servers ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOCAL, 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def server(name: str, cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A server in its own process group, stopped (the whole group) when the block ends."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        stop_group(name, proc)


def stop_group(name: str, proc: subprocess.Popen[bytes]) -> None:
    """SIGINT to granian's main process (it stops its workers), then whatever is left of the
    group (a worker hung in its signal handler) is terminated and at last killed."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            note(f"{name} did not stop on SIGINT within 20 s: terminating its process group")
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not group_alive(proc.pid):
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + 5
        while group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
    proc.poll()


def group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process of the group is left."""
    proc_dir = Path("/proc")
    if not proc_dir.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for stat in proc_dir.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def wait_ready(name: str, proc: subprocess.Popen[bytes], url: str, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail(log)}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{name} not ready at {url} after {timeout:.0f} s:\n{tail(log)}")


def tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# -- measuring --------------------------------------------------------------------------------


def page_bytes(base: str, codes: list[str]) -> int:
    """The median body size of a few real scan pages."""
    sizes = []
    headers = dict(h.split(": ", 1) for h in HEADERS)
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        for code in codes:
            answer = client.get(f"/s/{code}")
            if answer.status_code != 200:
                raise RuntimeError(f"GET /s/{code} answered {answer.status_code}: {answer.text[:300]}")
            sizes.append(len(answer.content))
    return int(statistics.median(sizes))


def sticker_available(base: str, code: str) -> tuple[bool, str]:
    try:
        answer = httpx.get(f"{base}/s/{code}/sticker.png", timeout=60)
    except httpx.TransportError as exc:
        return False, f"{type(exc).__name__}"
    kind = answer.headers.get("content-type", "")
    if answer.status_code != 200:
        return False, f"status {answer.status_code}"
    if not kind.startswith("image/png"):
        return False, f"content-type {kind!r}"
    return True, f"{len(answer.content)} bytes"


class CpuWatch:
    """How much CPU processes outside the benchmark (a test suite, another benchmark) took
    during a run: all busy time (/proc/stat) less that of the benchmark's own processes (this
    process group, the servers' groups, the embedded PostgreSQL's postmaster and its children, or
    every `postgres` process for an outside server). Linux only; elsewhere it says nothing."""

    def __init__(self, groups: set[int], postmaster: int | None) -> None:
        self.groups = groups
        self.postmaster = postmaster
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def _ours(self, pid: int, stat: str) -> tuple[bool, int]:
        comm, _, rest = stat.rpartition(")")
        fields = rest.split()
        ppid, pgid, ticks = int(fields[1]), int(fields[2]), int(fields[11]) + int(fields[12])
        if self.postmaster is not None:
            mine = pgid in self.groups or self.postmaster in (pid, ppid)
        else:
            mine = pgid in self.groups or comm.endswith("(postgres")
        return mine, ticks

    def snapshot(self) -> tuple[int, dict[int, int]] | None:
        try:
            cpu = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        busy = sum(cpu) - cpu[3] - (cpu[4] if len(cpu) > 4 else 0)
        ours: dict[int, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                pid = int(stat.parent.name)
                mine, ticks = self._ours(pid, stat.read_text())
            except (OSError, ValueError, IndexError):
                continue
            if mine:
                ours[pid] = ticks
        return busy, ours

    def foreign_cores(
        self,
        before: tuple[int, dict[int, int]] | None,
        after: tuple[int, dict[int, int]] | None,
        seconds: float,
    ) -> float | None:
        if before is None or after is None or seconds <= 0:
            return None
        ours = sum(t - before[1].get(pid, 0) for pid, t in after[1].items())
        return round(max(0, after[0] - before[0] - ours) / self.hz / seconds, 2)


def load(
    label: str,
    base: str,
    paths: list[str],
    args: argparse.Namespace,
    watch: CpuWatch,
    foreign: dict[str, float | None],
    headers: list[str] = HEADERS,
) -> http_load.Result:
    time.sleep(1.0)  # let the server settle after the previous run
    note(f"{label}: {args.connections} connections, {args.warmup:g} s warm-up + {args.seconds:g} s ...")
    before, started = watch.snapshot(), time.monotonic()
    result = http_load.run_processes(
        base,
        paths,
        processes=args.processes,
        connections=args.connections,
        seconds=args.seconds,
        warmup=args.warmup,
        headers=headers,
    )
    key = label.split()[0]
    foreign[key] = watch.foreign_cores(before, watch.snapshot(), time.monotonic() - started)
    note(f"{label}: {result.line()}")
    if (foreign[key] or 0.0) > 0.1:
        note(
            f"{label}: other processes took {foreign[key]:.2f} cores during the run:"
            " figures are low and noisy; measure again on a quiet machine"
        )
    if result.seconds and result.client_cpu_seconds / result.seconds > 0.8 * args.processes:
        note(f"{label}: the load generator was near its limit; measure again with more --processes")
    if result.errors:
        note(f"{label}: errors {dict(result.statuses)} {dict(result.failures)}")
    return result


def row(name: str, what: str, r: http_load.Result | None, other: float | None) -> str:
    if r is None:
        return f"{name:<8} {what:<26} {'skipped':>10}"

    def ms(q: float) -> str:
        value = r.percentile_ms(q)
        return "-" if value is None else f"{value:.1f}"

    client = r.client_cpu_seconds / r.seconds if r.seconds else 0.0
    others = "-" if other is None else f"{other:.2f}"
    return (
        f"{name:<8} {what:<26} {r.rps:>10,.0f} {ms(50):>8} {ms(95):>8} {ms(99):>8} {ms(100):>8}"
        f" {r.errors:>7} {client:>7.2f} {others:>6}"
    )


class Check:
    """One of the issue's targets: a measured value and whether it meets the target."""

    def __init__(self, label: str, value: float | None, target: str, test: Callable[[float], bool]) -> None:
        self.label = label
        self.value = value
        self.target = target
        self.passed = None if value is None else bool(test(value))

    def line(self) -> str:
        shown = "-" if self.value is None else f"{self.value:g}"
        outcome = {None: "skipped", True: "PASS", False: "FAIL"}[self.passed]
        return f"{self.label:<28} {shown:>8}  ({self.target})  {outcome}"

    def as_json(self) -> dict[str, Any]:
        return {"value": self.value, "target": self.target, "pass": self.passed}


def git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except OSError:
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


# -- the run ----------------------------------------------------------------------------------


def bench(url: str, args: argparse.Namespace, stack: ExitStack) -> dict[str, Any]:
    shops = asyncio.run(prepare_database(url, args.shops, args.seed))
    data_dir = Path(args.data_dir).resolve()
    logs = data_dir / "logs"
    base_env = {k: v for k, v in os.environ.items() if k != "MERCHANT_CODE_DATABASE_URL"}
    service_env = {
        **base_env,
        "MERCHANT_CODE_DATABASE_URL": url,
        "MERCHANT_CODE_SCHEDULER": "false",
        # every request is checked against the flood limit (its cost is measured), but the
        # harness's one loopback address is not a flood to be stopped
        "MERCHANT_CODE_SCAN_RATE": "100000000",
        "MERCHANT_CODE_LOG_LEVEL": "warning",
        "MERCHANT_CODE_WORKERS": str(args.workers),
        "MERCHANT_CODE_DATA_DIR": str(data_dir),
    }
    profiles = rebuild_profiles(service_env, url, args.rebuild_profiles)
    sample = asyncio.run(sample_shops(url, args.sample))
    if not sample:
        raise RuntimeError("the database has no shops")
    ids = [f"/bare/{shop_id}" for shop_id, _ in sample]
    codes = [code for _, code in sample]

    service_port = args.port or free_port()
    service_base = f"http://{LOCAL}:{service_port}"
    service_log = logs / "service.log"
    note(f"service on {service_base} ({args.workers} worker(s)), log {service_log}")
    service = stack.enter_context(
        server(
            "service",
            [sys.executable, "-m", "merchant_code", "serve", "--host", LOCAL, "--port", str(service_port)],
            service_env,
            service_log,
        )
    )
    wait_ready("service", service, f"{service_base}/readyz", service_log)
    size = page_bytes(service_base, codes[:15])
    note(f"a scan page is {size:,} bytes (median of {min(15, len(codes))})")

    bare_port = args.bare_port or free_port()
    bare_base = f"http://{LOCAL}:{bare_port}"
    bare_log = logs / "bare.log"
    bare_env = {
        **base_env,
        "BARE_DATABASE_URL": url,
        "BARE_PAGE_BYTES": str(size),
        "BARE_POOL_MAX": os.environ.get("MERCHANT_CODE_POOL_MAX", "10"),
    }
    note(f"bare app on {bare_base} ({args.workers} worker(s)), log {bare_log}")
    bare = stack.enter_context(
        server(
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
    wait_ready("bare app", bare, f"{bare_base}/plain", bare_log)
    bare_size = len(httpx.get(f"{bare_base}{ids[0]}", timeout=10).content)
    note(f"a bare page is {bare_size:,} bytes")

    runs: dict[str, http_load.Result | None] = {}
    foreign: dict[str, float | None] = {}
    watch = CpuWatch({os.getpgrp(), service.pid, bare.pid}, postmaster(args))
    runs["scan"] = load(
        "scan  service GET /s/{code}", service_base, [f"/s/{c}" for c in codes], args, watch, foreign
    )
    runs["bare"] = load("bare  GET /bare/{id}", bare_base, ids, args, watch, foreign)

    skipped: list[str] = []
    sticker_codes = codes[: args.sticker_codes]
    available, why = sticker_available(service_base, codes[0])
    if available:
        stickers = [f"/s/{c}/sticker.png" for c in sticker_codes]
        note(f"sticker: {why}; warming the cache with {len(stickers):,} stickers ...")
        warm = asyncio.run(
            http_load.sweep(service_base, stickers, connections=args.connections, headers=IMAGE_HEADERS)
        )
        note(f"sticker warm-up: {warm.ok:,} ok, {warm.errors} errors in {warm.seconds:.1f} s")
        runs["sticker"] = load(
            "sticker  GET /s/{code}/sticker.png", service_base, stickers, args, watch, foreign, IMAGE_HEADERS
        )
        runs["plain"] = load("plain  bare GET /plain", bare_base, ["/plain"], args, watch, foreign)
    else:
        note(f"GET /s/{{code}}/sticker.png is not there yet ({why}): sticker comparison skipped")
        skipped.append("sticker")
        runs["sticker"] = runs["plain"] = None

    return report(args, shops, size, bare_size, profiles, runs, foreign, skipped)


def postmaster(args: argparse.Namespace) -> int | None:
    """The embedded server's postmaster pid (None with --database-url)."""
    if args.database_url:
        return None
    try:
        return int((Path(args.pg_data) / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def ratio(a: http_load.Result | None, b: http_load.Result | None) -> float | None:
    if a is None or b is None or b.rps == 0:
        return None
    return round(a.rps / b.rps, 3)


def report(
    args: argparse.Namespace,
    shops: int,
    size: int,
    bare_size: int,
    profiles: dict[str, Any],
    runs: dict[str, http_load.Result | None],
    foreign: dict[str, float | None],
    skipped: list[str],
) -> dict[str, Any]:
    scan_ratio = ratio(runs["scan"], runs["bare"])
    sticker_ratio = ratio(runs["sticker"], runs["plain"])
    scan = runs["scan"]
    scan_p99 = scan.percentile_ms(99) if scan else None
    errors = sum(r.errors for r in runs.values() if r is not None)
    checks = {
        "scan_ratio": Check("scan ratio service/bare", scan_ratio, ">= 1.0", lambda v: v >= 1.0),
        "scan_p99_ms": Check(
            "scan p99 (ms)", None if scan_p99 is None else round(scan_p99, 2), "< 50", lambda v: v < 50.0
        ),
        "sticker_ratio": Check("sticker ratio sticker/plain", sticker_ratio, "> 0.5", lambda v: v > 0.5),
    }
    passed = all(c.passed is True for c in checks.values()) and errors == 0

    print()
    print(
        f"{'run':<8} {'what':<26} {'req/s':>10} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}"
        f" {'errors':>7} {'client':>7} {'other':>6}"
    )
    for name, what in (
        ("scan", "service /s/{code}"),
        ("bare", "bare /bare/{id}"),
        ("sticker", "service /s/{code}/sticker"),
        ("plain", "bare /plain"),
    ):
        print(row(name, what, runs[name], foreign.get(name)))
    print("(client: cores the load generator used in the window; other: cores taken by other processes)")
    print()
    for check in checks.values():
        print(check.line())
    if errors:
        print(f"errors in the runs: {errors} (a run with errors does not pass)")
    print(
        f"overall: {'PASS' if passed else 'FAIL'}" + (f" (skipped: {', '.join(skipped)})" if skipped else "")
    )

    return {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "processor": _cpu_model(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
        },
        "shops": shops,
        "workers": args.workers,
        "connections": args.connections,
        "client_processes": args.processes,
        "seconds": args.seconds,
        "warmup": args.warmup,
        "sample_codes": args.sample,
        "page_bytes": size,
        "bare_page_bytes": bare_size,
        "profiles": profiles,
        "runs": {name: (r.summary() if r is not None else None) for name, r in runs.items()},
        # cores taken by processes outside the benchmark during each run (0 on a quiet machine)
        "foreign_cores": foreign,
        "ratios": {"scan": scan_ratio, "sticker": sticker_ratio},
        "targets": {key: check.as_json() for key, check in checks.items()},
        "skipped": skipped,
        "errors": errors,
        "pass": passed,
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> None:
    cores = os.cpu_count() or 1
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shops", type=int, default=1_000_000, help="shops to seed into an empty database")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--database-url", help="use this server instead of the embedded one")
    parser.add_argument(
        "--pg-data", default=str(BENCH / "var" / "pg"), help="the embedded server's folder, kept between runs"
    )
    parser.add_argument(
        "--rebuild-profiles", action="store_true", help="rebuild (and time) every profile before measuring"
    )
    parser.add_argument(
        "--data-dir",
        default=str(BENCH / "var" / "data"),
        help="the service's MERCHANT_CODE_DATA_DIR and logs",
    )
    parser.add_argument("--workers", type=int, default=cores, help="granian workers of each server")
    parser.add_argument("--processes", type=int, default=max(1, cores // 4), help="load generator processes")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window of each run")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up before each window")
    parser.add_argument("--sample", type=int, default=10_000, help="random shops to request")
    parser.add_argument("--sticker-codes", type=int, default=1_000, help="stickers to warm and request")
    parser.add_argument("--port", type=int, default=0, help="service port (default: a free one)")
    parser.add_argument("--bare-port", type=int, default=0, help="bare app port (default: a free one)")
    args = parser.parse_args()

    # Ctrl-C and a plain kill both end in the cleanup below (even when started in the
    # background, where SIGINT comes ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        with ExitStack() as stack:
            if args.database_url:
                url = args.database_url
            else:
                note(f"embedded PostgreSQL in {args.pg_data}")
                url = stack.enter_context(embedded_postgres(Path(args.pg_data)))
            result = bench(url, args, stack)
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
