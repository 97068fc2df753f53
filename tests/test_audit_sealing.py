"""Audited writes do not queue on one lock: rows are sealed into the chain afterwards, exactly."""

from __future__ import annotations

import asyncio
import datetime
import time
from pathlib import Path
from types import SimpleNamespace

import asyncpg
import pytest

from merchant_code import audit, db, migrate, qr
from merchant_code import audit_checkpoints as checkpoints
from merchant_code.scheduler import registered_jobs
from merchant_code.settings import Settings
from tests import cli


async def _audited_write(conn: asyncpg.Connection, n: int) -> None:
    """A tiny write and its audit row, in one transaction: what every write of the service does."""
    async with conn.transaction():
        await conn.execute("INSERT INTO auth_attempt (key) VALUES ($1)", f"login:writer{n}")
        await audit.append(conn, actor=None, action="test.write", object_type="n", object_id=str(n))


async def _writes(conn: asyncpg.Connection, count: int, start: int = 0) -> None:
    for n in range(start, start + count):
        await _audited_write(conn, n)


async def _seal_order(conn: asyncpg.Connection) -> list[int]:
    return list(
        await conn.fetchval("SELECT coalesce(array_agg(seal_seq ORDER BY seal_seq), '{}') FROM audit_event")
    )


async def test_ten_thousand_writes_from_32_writers_and_two_sealers_make_one_exact_chain(db_url: str) -> None:
    role = await db.app_role(db_url)
    writers = await db.create_pool(db_url, min_size=32, max_size=32, role=role)
    # two service instances, each with its own pool and its own sealer running all along
    instances = [await db.create_pool(db_url, max_size=2, role=role) for _ in range(2)]
    done = asyncio.Event()
    sealed = [0, 0]

    async def sealer(i: int) -> None:
        async with db.acquire(instances[i]) as conn:
            while not done.is_set():
                sealed[i] += await audit.seal(conn, batch=500)
                await asyncio.sleep(0.005)  # pacing, as the scheduler's interval does

    async def writer(w: int) -> None:
        async with db.acquire(writers) as conn:
            for n in range(w, 10_000, 32):
                await _audited_write(conn, n)

    try:
        sealers = [asyncio.create_task(sealer(i)) for i in range(2)]
        await asyncio.gather(*(writer(w) for w in range(32)))
        done.set()
        await asyncio.gather(*sealers)
        async with db.acquire(instances[0]) as conn:
            sealed[0] += await audit.seal(conn)
            assert sum(sealed) == 10_000
            assert await audit.verify(conn) == (10_000, None)
            assert await audit.pending(conn) == audit.Pending(0, None)
            # one chain, no fork: every place taken once, none skipped
            assert await _seal_order(conn) == list(range(1, 10_001))
            assert await conn.fetchval("SELECT count(*) FROM auth_attempt") == 10_000
    finally:
        for pool in (writers, *instances):
            await pool.close()


async def _rows(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return [r async for r in db.queries.list_audit_chain(conn, after=0, batch=100)]


async def _as_owner_past_the_guard(conn: asyncpg.Connection, *statements: str) -> None:
    await conn.execute("ALTER TABLE audit_event DISABLE TRIGGER USER")
    for sql in statements:
        await conn.execute(sql)
    await conn.execute("ALTER TABLE audit_event ENABLE TRIGGER USER")


@pytest.mark.parametrize("change", ["content", "hash", "delete", "insert"])
async def test_each_way_of_tampering_with_a_sealed_row_is_named_by_row(
    conn: asyncpg.Connection, change: str
) -> None:
    await _writes(conn, 6)
    assert await audit.seal(conn) == 6
    rows = await _rows(conn)
    target, after = rows[2], rows[3]
    if change == "content":
        await _as_owner_past_the_guard(
            conn, f"UPDATE audit_event SET object_id = 'x' WHERE id = {target['id']}"
        )
    elif change == "hash":
        await _as_owner_past_the_guard(
            conn, f"UPDATE audit_event SET hash = sha256(hash) WHERE id = {target['id']}"
        )
    elif change == "delete":
        await _as_owner_past_the_guard(conn, f"DELETE FROM audit_event WHERE id = {target['id']}")
    else:  # a row made up and chained right after the target, its own hash computed correctly
        await _as_owner_past_the_guard(
            conn, f"UPDATE audit_event SET seal_seq = seal_seq + 100 WHERE seal_seq > {target['seal_seq']}"
        )
        forged = await conn.fetchval(
            "INSERT INTO audit_event (action, object_type) VALUES ('test.write', 'n') RETURNING id"
        )
        row = await conn.fetchrow(
            "SELECT id, at, actor_account_id, action, object_type, object_id, request_id, detail,"
            " detail::text AS detail_text FROM audit_event WHERE id = $1",
            forged,
        )
        assert row is not None
        made_up = audit.digest(target["hash"], audit._event(row), row["detail_text"])
        await conn.execute(
            "UPDATE audit_event SET seal_seq = $1, prev_hash = $2, hash = $3 WHERE id = $4",
            target["seal_seq"] + 1, target["hash"], made_up, forged,
        )  # fmt: skip
    checked, broken = await audit.verify(conn)
    named = target["id"] if change in ("content", "hash") else after["id"]
    intact = 4 if change == "insert" else 2  # the made-up row chains onto the target; its successor does not
    assert broken is not None and broken.id == named and checked == intact


async def test_a_write_that_rolls_back_leaves_no_audit_row(conn: asyncpg.Connection) -> None:
    class Refused(Exception):
        pass

    async def refused_write() -> None:
        async with conn.transaction():
            await conn.execute("INSERT INTO auth_attempt (key) VALUES ('login:gone')")
            await audit.append(conn, actor=None, action="test.write", object_type="n", object_id="gone")
            raise Refused

    with pytest.raises(Refused):
        await refused_write()
    assert await conn.fetchval("SELECT count(*) FROM audit_event") == 0
    assert await audit.seal(conn) == 0
    await _writes(conn, 1)
    assert await audit.seal(conn) == 1
    assert await audit.verify(conn) == (1, None)
    assert [r["object_id"] for r in await _rows(conn)] == ["0"]


async def _gone(conn: asyncpg.Connection, pid: int) -> None:
    deadline = time.monotonic() + 30  # a backend exits at once; generous for a busy machine
    while await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid):
        assert time.monotonic() < deadline, f"backend {pid} still there"
        await asyncio.sleep(0.02)


async def test_a_sealer_killed_mid_seal_leaves_the_chain_verifiable_and_the_next_seal_completes_it(
    db_url: str, conn: asyncpg.Connection
) -> None:
    await _writes(conn, 20)
    assert await audit.seal(conn) == 20
    await _writes(conn, 30, start=20)
    victim = await db.connect(db_url)
    pid = victim.get_server_pid()
    try:
        seal = victim.transaction()
        await seal.start()
        assert await audit.seal_batch(victim) == 30  # chained, not committed yet
        # another instance's sealer meanwhile finds the lock taken: it neither waits nor forks
        assert await audit.seal(conn) == 0
        await conn.execute("SELECT pg_terminate_backend($1)", pid)  # before its commit
        await _gone(conn, pid)
    finally:
        victim.terminate()
    assert await audit.verify(conn) == (20, None)  # what was sealed before still holds
    assert (await audit.pending(conn)).count == 30  # the cut seal left nothing half-done
    assert await audit.seal(conn) == 30
    assert await audit.verify(conn) == (50, None)
    assert await _seal_order(conn) == list(range(1, 51))


async def test_a_second_sealer_waits_for_none_and_continues_from_the_first_ones_head(
    db_url: str, conn: asyncpg.Connection
) -> None:
    await _writes(conn, 5)
    first = await db.connect(db_url)
    try:
        async with first.transaction():
            assert await audit.seal_batch(first) == 5
            await _writes(conn, 3, start=5)  # committed while the first sealer is at work
            async with conn.transaction():
                assert await audit.seal_batch(conn) is None
        assert await audit.seal(conn) == 3
    finally:
        await first.close()
    assert await audit.verify(conn) == (8, None)
    assert [r["object_id"] for r in await _rows(conn)] == [str(n) for n in range(8)]


async def test_rows_not_sealed_yet_are_counted_with_the_oldest_not_reported_broken(
    db_url: str, conn: asyncpg.Connection
) -> None:
    await _writes(conn, 3)
    await audit.seal(conn)
    await _writes(conn, 4, start=3)
    report = await checkpoints.verify(conn)
    oldest = await conn.fetchval("SELECT min(at) FROM audit_event WHERE hash IS NULL")
    assert (report.checked, report.unsealed, report.oldest_unsealed, report.problems) == (3, 4, oldest, [])
    # the command line seals what has committed first, unless a sealer is at work right then
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", audit.SEAL_KEY)
        busy = await asyncio.to_thread(cli.run, db_url, "audit", "verify")
    assert busy.returncode == 0, busy.stderr
    assert "audit chain intact: 3 events" in busy.stdout
    assert "4 event(s) not sealed yet" in busy.stdout and "the oldest written" in busy.stdout
    sealed = await asyncio.to_thread(cli.run, db_url, "audit", "verify")
    assert sealed.returncode == 0 and "audit chain intact: 7 events" in sealed.stdout
    assert "not sealed" not in sealed.stdout


async def test_a_chain_and_checkpoints_from_before_sealing_still_hold_and_new_rows_continue_it(
    empty_db_url: str, tmp_path: Path
) -> None:
    """0034: rows chained by the old appends (under one lock, in id order) take their id as their
    place; a checkpoint signed then (without a place) still verifies, and still finds a cut tail."""
    settings = Settings(data_dir=str(tmp_path))
    files = migrate.load()
    conn = await db.connect(empty_db_url)
    try:
        await migrate.migrate(conn, [m for m in files if m.name < "0034"])
        prev: bytes | None = None
        at = datetime.datetime(2026, 11, 30, 8, 0, 0, 123456, tzinfo=datetime.UTC)
        for n in range(5):  # as audit.append wrote them before
            event = audit.Event(
                id=await conn.fetchval("SELECT nextval(pg_get_serial_sequence('audit_event', 'id'))"),
                at=at + datetime.timedelta(seconds=n), actor_account_id=None, action="test.old",
                object_type="n", object_id=str(n), request_id=None, detail={"n": n, "x": 0.1},
            )  # fmt: skip
            text = await conn.fetchval("SELECT ($1::jsonb)::text", event.detail)
            digested = audit.digest(prev, event, text)
            await conn.execute(
                "INSERT INTO audit_event (id, at, action, object_type, object_id, detail, prev_hash, hash)"
                " OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                event.id, event.at, event.action, event.object_type, event.object_id, event.detail, prev,
                digested,
            )  # fmt: skip
            prev = digested
        assert prev is not None
        key = await qr.ensure_signing_key(conn, settings)
        signed_at = at + datetime.timedelta(minutes=5)
        old = await conn.fetchval(
            "INSERT INTO audit_checkpoint (at, head_id, head_hash, kid, signature)"
            " VALUES ($1, 5, $2, $3, $4) RETURNING id",
            signed_at, prev, key.kid, key.private.sign(checkpoints.message(signed_at, 5, prev, key.kid)),
        )  # fmt: skip

        await migrate.migrate(conn)
        assert await audit.verify(conn) == (5, None)
        await _writes(conn, 2)
        new = await checkpoints.make(conn, settings)
        assert new is not None and (new.head_id, new.head_seq) == (7, 7)
        report = await checkpoints.verify(conn)
        assert (report.checked, report.checkpoints, report.problems) == (7, 2, [])

        await _as_owner_past_the_guard(conn, "DELETE FROM audit_event WHERE seal_seq > 4")
        report = await checkpoints.verify(conn)
        assert report.checked == 4 and len(report.problems) == 1
        assert report.problems[0].startswith(
            f"audit chain truncated: chain ends at row 4 but checkpoint {new.id} signed head row 7 > 4"
        )
        assert "2 checkpoint(s) name rows that are gone" in report.problems[0]  # the old one too
        assert old is not None
    finally:
        await conn.close()


async def test_the_scheduled_seal_job_chains_what_committed_under_the_services_own_role(db_url: str) -> None:
    pool = await db.create_pool(db_url, role=await db.app_role(db_url))
    try:
        job = next(j for j in registered_jobs() if j.id == "audit-seal")
        assert job.seconds == audit.SEAL_SECONDS and job.at_start
        async with db.acquire(pool) as conn:
            await _writes(conn, 3)
        await job.func(SimpleNamespace(pool=pool))
        async with db.acquire(pool) as conn:
            assert await conn.fetchval("SELECT current_user") == "merchant_code_app"
            assert await audit.pending(conn) == audit.Pending(0, None)
            assert await audit.verify(conn) == (3, None)
    finally:
        await pool.close()
