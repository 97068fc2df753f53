"""A closed-loop HTTP/1.1 load generator: persistent keep-alive connections, requests back to back.

    .venv/bin/python bench/http_load.py http://127.0.0.1:8000 /plain [/other ...] \\
        [--paths-file FILE] [-c 64] [-d 10] [-w 2] [-p 2] [-H 'Accept: text/html'] [--expect 200]

Each connection sends one request, waits for the whole response, then sends the next, for a
warm-up and then a measured window; the path of every request is picked at random from the list.
Only responses completed inside the window count: requests/s counts the good ones (2xx/3xx, or the
statuses given with --expect), errors are the other statuses plus connections lost mid-request and
requests still unanswered after --timeout. Latencies of the good responses are kept one by one, and
with --processes P the P worker processes hand their samples back, so percentiles are exact over
every sample, not averaged.

As a module: `await run(target, paths, ...)` in this process, or `run_processes(target, paths,
processes=P, ...)` across P processes; `await sweep(target, paths)` fetches every path once (to
warm a cache). Plain asyncio protocols, no dependencies.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import random
import signal
import sys
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit

_monotonic = time.monotonic


@dataclass
class Result:
    """What one run measured. `latencies` holds every good response's latency in seconds."""

    seconds: float
    connections: int
    processes: int = 1
    statuses: Counter[int] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    latencies: array[float] = field(default_factory=lambda: array("d"))
    errors_by_status: int = 0
    client_cpu_seconds: float = 0.0
    _sorted: list[float] | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def errors(self) -> int:
        return self.errors_by_status + sum(self.failures.values())

    @property
    def requests(self) -> int:
        """Responses completed in the window, good or not."""
        return sum(self.statuses.values())

    @property
    def rps(self) -> float:
        """Good responses per second."""
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def percentile_ms(self, q: float) -> float | None:
        """Nearest-rank percentile (q in 0..100) of the good responses' latencies, in ms."""
        if not self.latencies:
            return None
        if self._sorted is None:
            self._sorted = sorted(self.latencies)
        rank = max(1, math.ceil(q / 100 * len(self._sorted)))
        return self._sorted[rank - 1] * 1000

    def summary(self) -> dict[str, Any]:
        def ms(q: float) -> float | None:
            value = self.percentile_ms(q)
            return None if value is None else round(value, 2)

        return {
            "rps": round(self.rps, 1),
            "ok": self.ok,
            "errors": self.errors,
            "p50_ms": ms(50),
            "p95_ms": ms(95),
            "p99_ms": ms(99),
            "max_ms": ms(100),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "failures": dict(self.failures),
            "seconds": round(self.seconds, 3),
            "connections": self.connections,
            "processes": self.processes,
            # share of one core the load generator used during the window (all its processes)
            "client_cores": round(self.client_cpu_seconds / self.seconds, 2) if self.seconds else None,
        }

    def line(self) -> str:
        def ms(q: float) -> str:
            value = self.percentile_ms(q)
            return "-" if value is None else f"{value:.1f}"

        return (
            f"{self.rps:,.0f} req/s  p50 {ms(50)} ms  p95 {ms(95)} ms  p99 {ms(99)} ms"
            f"  max {ms(100)} ms  errors {self.errors}  ({self.ok:,} ok in {self.seconds:.1f} s,"
            f" {self.connections} connections, {self.processes} process(es))"
        )

    @classmethod
    def merge(cls, parts: Sequence[Result]) -> Result:
        """One result from the same window measured by several processes: samples concatenated."""
        merged = cls(
            seconds=max(p.seconds for p in parts),
            connections=sum(p.connections for p in parts),
            processes=sum(p.processes for p in parts),
        )
        for part in parts:
            merged.statuses.update(part.statuses)
            merged.failures.update(part.failures)
            merged.latencies.extend(part.latencies)
            merged.errors_by_status += part.errors_by_status
            merged.client_cpu_seconds += part.client_cpu_seconds
        return merged


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    requests: tuple[bytes, ...]


def build_requests(target: str, paths: Iterable[str], headers: Sequence[str] = ()) -> Target:
    """Every request pre-encoded once: `target` is `http://host:port`, paths start with /."""
    parts = urlsplit(target)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"target must be http://host[:port], not {target!r}")
    port = parts.port or 80
    prefix = parts.path.rstrip("/")
    extra = "".join(f"{h.strip()}\r\n" for h in headers if h.strip())
    host_header = parts.netloc
    built = tuple(
        f"GET {prefix}{p} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: http_load\r\n{extra}\r\n".encode()
        for p in paths
    )
    if not built:
        raise ValueError("no paths to request")
    return Target(parts.hostname, port, built)


class _Run:
    """State shared by the connections of one process during one run."""

    def __init__(
        self,
        requests: Sequence[bytes],
        *,
        window: tuple[float, float],
        expect: frozenset[int] | None,
        once: bool,
        seed: int | None,
    ) -> None:
        self.requests = list(requests)
        self.t0, self.t1 = window
        self.expect = expect
        self.stopping = False
        self.exhausted = False
        self._once: Iterator[bytes] | None = iter(self.requests) if once else None
        self._choice: Callable[[Sequence[bytes]], bytes] = random.Random(seed).choice
        self.latencies: array[float] = array("d")
        self.statuses: Counter[int] = Counter()
        self.failures: Counter[str] = Counter()
        self.bad_statuses = 0
        self.clients: set[_Client] = set()

    def next_request(self) -> bytes | None:
        if self.stopping:
            return None
        if self._once is not None:
            request = next(self._once, None)
            if request is None:
                self.exhausted = True
            return request
        return self._choice(self.requests)

    def completed(self, status: int, sent_at: float) -> None:
        now = _monotonic()
        if not self.t0 <= now <= self.t1:
            return
        self.statuses[status] += 1
        good = status in self.expect if self.expect is not None else 200 <= status < 400
        if good:
            self.latencies.append(now - sent_at)
        else:
            self.bad_statuses += 1

    def failed(self, reason: str) -> None:
        if self.t0 <= _monotonic() <= self.t1:
            self.failures[reason] += 1


_HEAD, _BODY, _CHUNK_SIZE, _CHUNK_DATA, _TRAILER, _UNTIL_CLOSE = range(6)


class _Client(asyncio.Protocol):
    """One keep-alive connection: the next request is written from the callback that completes
    the previous response, so a request costs no task switch."""

    def __init__(self, run: _Run, closed: asyncio.Future[None]) -> None:
        self.run = run
        self.closed = closed
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.state = _HEAD
        self.left = 0
        self.status = 0
        self.close_after = False
        self.inflight = False
        self.sent_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send_next(self) -> None:
        assert self.transport is not None
        request = self.run.next_request()
        if request is None:
            self.transport.close()
            return
        self.inflight = True
        self.sent_at = _monotonic()
        self.transport.write(request)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.inflight:
            if self.state == _UNTIL_CLOSE:
                self._done()
            elif not self.run.stopping:
                self.run.failed("closed mid-request" if exc is None else type(exc).__name__)
        self.inflight = False
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while buf:
            state = self.state
            if state == _HEAD:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(buf[:end]).lower()
                del buf[: end + 4]
                try:
                    self.status = int(head[9:12])
                except ValueError:
                    self._protocol_error("bad status line")
                    return
                self.close_after = b"\r\nconnection: close" in head or head.startswith(b"http/1.0")
                at = head.find(b"\r\ncontent-length:")
                if at >= 0:
                    stop = head.find(b"\r\n", at + 2)
                    self.left = int(head[at + 17 : stop if stop >= 0 else None])
                    self.state = _BODY
                elif b"\r\ntransfer-encoding: chunked" in head:
                    self.state = _CHUNK_SIZE
                elif self.status in (204, 304) or 100 <= self.status < 200:
                    self.left = 0
                    self.state = _BODY
                else:
                    self.state = _UNTIL_CLOSE
                    self.close_after = True
                if self.state == _BODY and self.left == 0:
                    self._done()
            elif state == _BODY:
                if len(buf) < self.left:
                    return
                del buf[: self.left]
                self._done()
            elif state == _CHUNK_SIZE:
                end = buf.find(b"\r\n")
                if end < 0:
                    return
                size = int(bytes(buf[:end]).split(b";", 1)[0], 16)
                del buf[: end + 2]
                if size == 0:
                    self.state = _TRAILER
                else:
                    self.left = size + 2  # the data and its CRLF
                    self.state = _CHUNK_DATA
            elif state == _CHUNK_DATA:
                if len(buf) < self.left:
                    return
                del buf[: self.left]
                self.state = _CHUNK_SIZE
            elif state == _TRAILER:
                end = buf.find(b"\r\n")
                if end < 0:
                    return
                del buf[: end + 2]
                if end == 0:  # the empty line that ends the trailers
                    self._done()
            else:  # _UNTIL_CLOSE: the body ends with the connection
                buf.clear()
                return

    def _done(self) -> None:
        self.state = _HEAD
        self.inflight = False
        self.run.completed(self.status, self.sent_at)
        assert self.transport is not None
        if self.close_after:
            self.transport.close()
        elif not self.transport.is_closing():
            self.send_next()

    def _protocol_error(self, reason: str) -> None:
        self.inflight = False
        self.run.failed(reason)
        assert self.transport is not None
        self.transport.close()


async def _drive(run: _Run, host: str, port: int) -> None:
    """Keep one connection busy until the run stops, reconnecting after a close."""
    loop = asyncio.get_running_loop()
    while not (run.stopping or run.exhausted):
        closed: asyncio.Future[None] = loop.create_future()
        try:
            _, client = await loop.create_connection(partial(_Client, run, closed), host, port)
        except OSError as exc:
            run.failed(f"connect: {type(exc).__name__}")
            await asyncio.sleep(0.1)
            continue
        run.clients.add(client)
        try:
            client.send_next()
            await closed
        finally:
            run.clients.discard(client)


async def _measure(
    target: Target,
    *,
    connections: int,
    window: tuple[float, float],
    expect: frozenset[int] | None,
    timeout: float,
    seed: int | None,
    once: bool = False,
) -> Result:
    run = _Run(target.requests, window=window, expect=expect, once=once, seed=seed)
    drivers = [asyncio.create_task(_drive(run, target.host, target.port)) for _ in range(connections)]
    t0, t1 = window
    cpu_from = cpu_to = None
    try:
        if once:
            cpu_from = time.process_time()
            await asyncio.gather(*drivers)
            cpu_to = time.process_time()
            t1 = _monotonic()
        else:
            await asyncio.sleep(max(0.0, t0 - _monotonic()))
            cpu_from = time.process_time()
            await asyncio.sleep(max(0.0, t1 - _monotonic()))
            cpu_to = time.process_time()
    finally:
        run.stopping = True
        now = _monotonic()
        for client in list(run.clients):
            if client.inflight and now - client.sent_at > timeout:
                run.failures["timeout"] += 1
            if client.transport is not None:
                client.transport.abort()
        for task in drivers:
            task.cancel()
        await asyncio.gather(*drivers, return_exceptions=True)
    return Result(
        seconds=t1 - t0,
        connections=connections,
        statuses=run.statuses,
        failures=run.failures,
        latencies=run.latencies,
        errors_by_status=run.bad_statuses,
        client_cpu_seconds=(cpu_to or 0.0) - (cpu_from or 0.0),
    )


async def run(
    target: str,
    paths: Sequence[str],
    *,
    connections: int = 64,
    seconds: float = 10.0,
    warmup: float = 2.0,
    headers: Sequence[str] = (),
    expect: Iterable[int] | None = None,
    timeout: float = 10.0,
    seed: int | None = None,
) -> Result:
    """Load `target` from this process: warm up for `warmup` s, then measure for `seconds` s."""
    start = _monotonic() + warmup
    return await _measure(
        build_requests(target, paths, headers),
        connections=connections,
        window=(start, start + seconds),
        expect=frozenset(expect) if expect is not None else None,
        timeout=timeout,
        seed=seed,
    )


async def sweep(
    target: str,
    paths: Sequence[str],
    *,
    connections: int = 16,
    headers: Sequence[str] = (),
    expect: Iterable[int] | None = None,
) -> Result:
    """Request every path exactly once over `connections` connections (to warm a cache)."""
    return await _measure(
        build_requests(target, paths, headers),
        connections=max(1, min(connections, len(paths))),
        window=(_monotonic(), math.inf),
        expect=frozenset(expect) if expect is not None else None,
        timeout=math.inf,
        seed=None,
        once=True,
    )


def _worker(pipe: Connection, target: Target, options: dict[str, Any]) -> None:
    # Ctrl-C goes to the whole foreground group: the parent decides and terminates the workers
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        pipe.send("ready")
        window: tuple[float, float] = pipe.recv()
        pipe.send(asyncio.run(_measure(target, window=window, **options)))
    except (EOFError, OSError):
        pass  # the parent gave up (interrupted): nobody to report to
    finally:
        pipe.close()


def run_processes(
    target: str,
    paths: Sequence[str],
    *,
    processes: int = 1,
    connections: int = 64,
    seconds: float = 10.0,
    warmup: float = 2.0,
    headers: Sequence[str] = (),
    expect: Iterable[int] | None = None,
    timeout: float = 10.0,
) -> Result:
    """`run` split over `processes` worker processes sharing one window; the results merged."""
    if processes <= 1:
        return asyncio.run(
            run(
                target,
                paths,
                connections=connections,
                seconds=seconds,
                warmup=warmup,
                headers=headers,
                expect=expect,
                timeout=timeout,
            )
        )
    built = build_requests(target, paths, headers)
    processes = min(processes, connections)
    shares = [connections // processes + (1 if i < connections % processes else 0) for i in range(processes)]
    context = multiprocessing.get_context("spawn")
    workers: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
    finished = False
    try:
        for i, share in enumerate(shares):
            mine, theirs = context.Pipe()
            options = {
                "connections": share,
                "expect": frozenset(expect) if expect is not None else None,
                "timeout": timeout,
                "seed": random.randrange(2**32) + i,
            }
            spawned = context.Process(target=_worker, args=(theirs, built, options), daemon=True)
            spawned.start()
            theirs.close()
            workers.append((spawned, mine))
        for proc, pipe in workers:
            if not pipe.poll(60) or pipe.recv() != "ready":
                raise RuntimeError(f"load worker {proc.pid} did not start")
        start = _monotonic() + warmup
        for _, pipe in workers:
            pipe.send((start, start + seconds))
        parts: list[Result] = []
        for proc, pipe in workers:
            if not pipe.poll(warmup + seconds + timeout + 60):
                raise RuntimeError(f"load worker {proc.pid} did not report")
            parts.append(pipe.recv())
        finished = True
        return Result.merge(parts)
    finally:
        for proc, pipe in workers:
            pipe.close()
            proc.join(timeout=5 if finished else 0)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("target", help="http://host:port")
    parser.add_argument("paths", nargs="*", help="paths to request, picked at random per request")
    parser.add_argument("--paths-file", help="more paths, one per line")
    parser.add_argument("-c", "--connections", type=int, default=64)
    parser.add_argument("-d", "--seconds", type=float, default=10.0, help="measured window (s)")
    parser.add_argument("-w", "--warmup", type=float, default=2.0, help="warm-up before the window (s)")
    parser.add_argument("-p", "--processes", type=int, default=1, help="worker processes")
    parser.add_argument("-H", "--header", action="append", default=[], help="'Name: value' (repeatable)")
    parser.add_argument(
        "--expect", type=int, action="append", help="good status (repeatable); default any 2xx or 3xx"
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="unanswered this long = error (s)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    paths = list(args.paths)
    if args.paths_file:
        with open(args.paths_file) as lines:
            paths += [ln.strip() for ln in lines if ln.strip()]
    if not paths:
        parser.error("give at least one path (or --paths-file)")
    try:
        result = run_processes(
            args.target,
            paths,
            processes=args.processes,
            connections=args.connections,
            seconds=args.seconds,
            warmup=args.warmup,
            headers=args.header,
            expect=args.expect,
            timeout=args.timeout,
        )
    except KeyboardInterrupt:
        sys.exit(130)
    print(json.dumps(result.summary()) if args.json else result.line())
    if result.ok == 0:
        sys.exit(1)


if __name__ == "__main__":
    main()
