"""Ingest at size: 10,000 LIVES inspections with 5% malformed, all accounted for; and the
database connection killed at random points of a 10,000-record ingest, resumed without losing or
duplicating anything."""

from __future__ import annotations

import asyncio
import datetime
import io
import random
import types
import zipfile

import asyncpg
import httpx
import msgspec

from merchant_code import db
from merchant_code.feeds import limits, runner
from merchant_code.feeds.base import InspectionRecord, Match, Page, Parsed, ShopRecord
from tests import factories


def lives_zip(usccs: list[str], rows: int, bad_every: int) -> tuple[bytes, list[bytes]]:
    """A LIVES zip of `rows` inspections over the given businesses; every `bad_every`-th row is
    malformed in one of four ways. Returns the zip and the bad lines' exact bytes."""
    rng = random.Random(5)
    businesses = "business_id,name,address\n" + "".join(f"{u},店{n},路{n}号\n" for n, u in enumerate(usccs))
    lines: list[bytes] = []
    bad: list[bytes] = []
    for n in range(rows):
        uscc = usccs[n % len(usccs)]
        day = f"2025{1 + n % 12:02d}{1 + n % 28:02d}"
        line = f"{uscc},{day},{rng.randint(60, 100)},Pass,Routine,检查{n}".encode()
        if n % bad_every == bad_every - 1:
            kind = (n // bad_every) % 4
            if kind == 0:
                line = f"{uscc},2025-13-45,90,Pass,Routine,bad date {n}".encode()  # wrong type of date
            elif kind == 1:
                line = f",{day},90,Pass,Routine,no business {n}".encode()  # a missing key
            elif kind == 2:
                line = f"{uscc},{day},90,Pass,Routine,".encode() + b"x" * 1_048_576  # a 1 MB field
            else:
                line = f"{uscc},{day},90,Pass,Routine,".encode() + b"\xff\xfe bad utf-8"
            bad.append(line)
        lines.append(line)
    inspections = b"business_id,date,score,result,type,description\n" + b"\n".join(lines) + b"\n"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("businesses.csv", businesses)
        z.writestr("inspections.csv", inspections)
        z.writestr(
            "feed_info.csv",
            "feed_date,feed_version,municipality_name,municipality_url,contact_email\n20251231,1,汇城区,,\n",
        )
    return out.getvalue(), bad


async def test_ten_thousand_records_with_five_percent_malformed_are_all_accounted_for(
    db_url: str, conn: asyncpg.Connection
) -> None:
    usccs = []
    for _ in range(50):
        shop_id, _ = await factories.shop(conn)
        usccs.append(await conn.fetchval("SELECT uscc FROM shop WHERE id = $1", shop_id))
    body, bad = lives_zip(usccs, 10_000, 20)
    await conn.execute(
        "INSERT INTO feed_source (kind, name, url, config)"
        " VALUES ('lives', 'city', 'http://127.0.0.1:9/lives.zip', $1)",
        {"allow_private": True},
    )
    transport = httpx.MockTransport(
        lambda r: httpx.Response(200, content=body, headers={"content-type": "application/zip"})
    )
    pool = await db.create_pool(db_url, max_size=4)
    try:
        result = await runner.run_source(pool, "city", transport=transport, deadline=120)
    finally:
        await pool.close()
    assert result.status == "ok", result.error
    c = result.counts
    assert c.fetched == c.inserted + c.updated + c.unchanged + c.quarantined
    assert c.quarantined == len(bad) == 500
    assert await conn.fetchval("SELECT count(*) FROM inspection WHERE source = 'city'") == 10_000 - 500
    stored = {bytes(r["raw_bytes"]) for r in await conn.fetch("SELECT raw_bytes FROM feed_reject")}
    # each bad record kept as it came, a 1 MB one cut to its first 4 KB and a marker
    assert all(limits.clip(line) in stored for line in bad)
    assert max(len(raw) for raw in stored) < 4200
    row = await conn.fetchrow(
        "SELECT fetched, inserted, quarantined FROM feed_run WHERE id = $1", result.run_id
    )
    assert row is not None and tuple(row) == (c.fetched, c.inserted, 500)


class Config(msgspec.Struct):
    url: str


class Progress:
    """Pages fetched by the run under way, so that a test can act once the run is `pages` in."""

    def __init__(self) -> None:
        self.fetched = 0
        self.target = 0
        self.reached = asyncio.Event()

    def restart(self, target: int) -> None:
        self.fetched, self.target = 0, target
        self.reached = asyncio.Event()

    def page(self) -> None:
        self.fetched += 1
        if self.fetched >= self.target:
            self.reached.set()


def paged_source(usccs: list[str], pages: int, per_page: int, progress: Progress) -> types.ModuleType:
    mod = types.ModuleType("paged")

    async def fetch(client: httpx.AsyncClient, config: Config, cursor: str | None) -> Page:
        n = int(cursor or 0)
        progress.page()
        await asyncio.sleep(0.01)  # stands in for the network's latency (the scenario, not a wait)
        return Page(body=str(n).encode(), next_cursor=str(n + 1), last=n + 1 >= pages)

    def parse(page: Page, config: Config) -> Parsed:
        n = int(page.body)
        records: list[object] = [ShopRecord(external_id=u, match=Match(uscc=u, business_id=u)) for u in usccs]
        for k in range(per_page):
            i = n * per_page + k
            records.append(
                InspectionRecord(
                    external_id=f"P{i}",
                    match=Match(business_id=usccs[i % len(usccs)]),
                    inspected_on=datetime.date(2025, 1, 1 + i % 28),
                    result="pass",
                    score=float(i % 100),
                )
            )
        return Parsed(records=records, rejects=[])  # type: ignore[arg-type]

    mod.Config = Config  # type: ignore[attr-defined]
    mod.fetch = fetch  # type: ignore[attr-defined]
    mod.parse = parse  # type: ignore[attr-defined]
    return mod


async def test_killing_the_database_connection_at_random_loses_and_duplicates_nothing(
    db_url: str, conn: asyncpg.Connection
) -> None:
    usccs = []
    for _ in range(20):
        shop_id, _ = await factories.shop(conn)
        usccs.append(await conn.fetchval("SELECT uscc FROM shop WHERE id = $1", shop_id))
    await conn.execute(
        "INSERT INTO feed_source (kind, name, url) VALUES ('lives', 'paged', 'http://127.0.0.1:9/')"
    )
    progress = Progress()
    mod = paged_source(usccs, pages=20, per_page=500, progress=progress)
    rng = random.Random(11)
    kills = 0
    runs = 0
    while True:
        runs += 1
        pool = await db.create_pool(db_url, max_size=4)
        # a random point of the run: a few pages in (so the run is under way however slow the
        # machine), then a random moment within the page (what the kill interrupts varies)
        progress.restart(target=rng.randint(1, 4))

        async def killer() -> None:
            nonlocal kills
            await progress.reached.wait()
            await asyncio.sleep(rng.uniform(0, 0.05))  # the random moment is the behaviour, not a wait
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            kills += 1

        task = asyncio.create_task(killer()) if kills < 4 else None
        try:
            result = await runner.run_source(
                pool, "paged", client=httpx.AsyncClient(), module=mod, deadline=60
            )
            done = result.status == "ok"
        except (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError):
            done = False  # the connection died under the run: start again from the stored cursor
        finally:
            if task is not None:
                task.cancel()
            try:
                await pool.close()
            except Exception:
                pool.terminate()
        if done:
            break
        assert runs < 30
    assert kills >= 1
    assert await conn.fetchval("SELECT count(*) FROM inspection WHERE source = 'paged'") == 10_000
    assert (
        await conn.fetchval("SELECT count(DISTINCT external_id) FROM inspection WHERE source = 'paged'")
        == 10_000
    )
    assert await conn.fetchval("SELECT cursor FROM feed_source WHERE name = 'paged'") == "20"
