"""Signed checkpoints of the audit chain's head: a cut tail is named, whoever cut it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import asyncpg
import msgspec
import pytest

from merchant_code import audit, db, qr
from merchant_code import audit_checkpoints as checkpoints
from merchant_code.scheduler import registered_jobs
from merchant_code.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def _cli(url: str, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MERCHANT_CODE_")}
    env["MERCHANT_CODE_DATABASE_URL"] = url
    env["MERCHANT_CODE_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "merchant_code", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


async def _append(conn: asyncpg.Connection, n: int, start: int = 0) -> None:
    async with conn.transaction():
        for i in range(start, start + n):
            await audit.append(conn, actor=None, action="account.disable", object_type="account",
                               object_id=f"user{i}")  # fmt: skip


async def _as_owner_past_the_guard(conn: asyncpg.Connection, *statements: str) -> None:
    """What only the database's owner can do, and only by switching the triggers off first."""
    await conn.execute("ALTER TABLE audit_event DISABLE TRIGGER USER")
    await conn.execute("ALTER TABLE audit_checkpoint DISABLE TRIGGER USER")
    for sql in statements:
        await conn.execute(sql)
    await conn.execute("ALTER TABLE audit_event ENABLE TRIGGER USER")
    await conn.execute("ALTER TABLE audit_checkpoint ENABLE TRIGGER USER")


@pytest.mark.parametrize("cut", [1, 5])
async def test_cutting_the_tail_of_the_chain_is_named_by_the_checkpoint_that_signed_it(
    conn: asyncpg.Connection, db_url: str, tmp_path: Path, cut: int
) -> None:
    await _append(conn, 10)
    signed = await asyncio.to_thread(_cli, db_url, tmp_path, "audit", "checkpoint")
    assert signed.returncode == 0, signed.stderr
    head = await conn.fetchval("SELECT max(id) FROM audit_event")
    number = await conn.fetchval("SELECT id FROM audit_checkpoint WHERE head_id = $1", head)
    assert f"checkpoint {number}: head row {head} signed" in signed.stdout
    intact = await asyncio.to_thread(_cli, db_url, tmp_path, "audit", "verify")
    assert intact.returncode == 0 and "10 events; 1 signed checkpoint(s) hold" in intact.stdout

    await _as_owner_past_the_guard(conn, f"DELETE FROM audit_event WHERE id > {head - cut}")
    assert await audit.verify(conn) == (10 - cut, None)  # the rows that are left still chain
    done = await asyncio.to_thread(_cli, db_url, tmp_path, "audit", "verify")
    assert done.returncode == 1
    end = head - cut
    assert f"chain ends at row {end} but checkpoint {number} signed head row {head} > {end}" in done.stderr
    assert "Traceback" not in done.stderr


async def test_checkpoints_verify_after_the_signing_key_is_rotated(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    settings = Settings(data_dir=str(tmp_path))
    await _append(conn, 3)
    first = await checkpoints.make(conn, settings)
    assert first is not None and await checkpoints.make(conn, settings) is None  # this head is signed
    await qr.rotate(conn, settings)
    await _append(conn, 2, start=3)
    second = await checkpoints.make(conn, settings)
    assert second is not None and second.kid != first.kid
    report = await checkpoints.verify(conn)
    assert (report.checked, report.checkpoints, report.problems) == (6, 2, [])  # 5 appended + the rotation
    # a revoked key's checkpoints are no longer relied on, and say so
    await qr.revoke_key(conn, first.kid)
    report = await checkpoints.verify(conn)
    assert (report.checkpoints, report.skipped, report.problems) == (1, 1, [])


async def test_a_checkpoint_not_signed_by_the_service_is_named(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    settings = Settings(data_dir=str(tmp_path))
    await _append(conn, 3)
    made = await checkpoints.make(conn, settings)
    assert made is not None
    # someone with the database but not the key claims a longer chain: the signature gives it away
    forged = await conn.fetchval(
        "INSERT INTO audit_checkpoint (at, head_id, head_hash, kid, signature)"
        " VALUES (now(), $1, $2, $3, $4) RETURNING id",
        made.head_id + 50, b"\x01" * 32, made.kid, b"\x02" * 64,
    )  # fmt: skip
    report = await checkpoints.verify(conn)
    assert report.problems == [
        f"checkpoint {forged} does not verify: its signature was not made by key {made.kid}"
    ]
    # a row deleted under a signed head, and the chain after it recomputed so that it links up
    rows = [r async for r in db.queries.list_audit_chain(conn, after=0, batch=10)]
    head = rows[-1]
    event = msgspec.convert({k: head[k] for k in audit.Event.__struct_fields__}, audit.Event)
    rehashed = audit.digest(rows[0]["hash"], event, head["detail_text"])
    await _as_owner_past_the_guard(
        conn,
        f"DELETE FROM audit_checkpoint WHERE id = {forged}",
        f"DELETE FROM audit_event WHERE id = {rows[1]['id']}",
        f"UPDATE audit_event SET prev_hash = '\\x{rows[0]['hash'].hex()}', hash = '\\x{rehashed.hex()}'"
        f" WHERE id = {head['id']}",
    )
    assert await audit.verify(conn) == (2, None)
    report = await checkpoints.verify(conn)
    assert any(f"signed head row {made.head_id}, which the chain does not hold" in p for p in report.problems)


async def test_an_export_still_names_the_cut_after_the_checkpoints_are_deleted_too(
    conn: asyncpg.Connection, db_url: str, tmp_path: Path
) -> None:
    await _append(conn, 6)
    assert (await asyncio.to_thread(_cli, db_url, tmp_path, "audit", "checkpoint")).returncode == 0
    out = tmp_path / "checkpoints.json"
    exported = await asyncio.to_thread(
        _cli, db_url, tmp_path, "audit", "export-checkpoints", "--out", str(out)
    )
    assert exported.returncode == 0, exported.stderr
    assert f"wrote {out}: 1 checkpoint(s)" in exported.stdout
    doc = json.loads(out.read_bytes())
    assert doc["format"] == "merchant-code-audit-checkpoints/1" and len(doc["keys"]) == 1
    head = doc["checkpoints"][0]["head_id"]

    # the owner cuts two rows and the checkpoint that would tell
    await _as_owner_past_the_guard(
        conn, f"DELETE FROM audit_event WHERE id > {head - 2}", "DELETE FROM audit_checkpoint"
    )
    alone = await asyncio.to_thread(_cli, db_url, tmp_path, "audit", "verify")
    assert alone.returncode == 0  # what the database alone can no longer tell
    held = await asyncio.to_thread(_cli, db_url, tmp_path, "audit", "verify", "--checkpoints", str(out))
    assert held.returncode == 1
    assert f"chain ends at row {head - 2} but exported checkpoint" in held.stderr
    assert "1 exported checkpoint(s) are not in the database as exported" in held.stderr

    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    bad = await asyncio.to_thread(_cli, db_url, tmp_path, "audit", "verify", "--checkpoints",
                                  str(tmp_path / "bad.json"))  # fmt: skip
    assert bad.returncode == 1 and "not a merchant-code checkpoint export" in bad.stderr
    assert "Traceback" not in bad.stderr


async def test_the_application_role_adds_checkpoints_but_cannot_change_or_delete_them(
    db_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await _append(conn, 2)
    pool = await db.create_pool(db_url, role=await db.app_role(db_url))
    try:
        state = SimpleNamespace(pool=pool, settings=Settings(data_dir=str(tmp_path)))
        job = next(j for j in registered_jobs() if j.id == "audit-checkpoint")
        await job.func(state)  # the scheduler's job, under the service's own role
        await job.func(state)  # and again (another instance): one checkpoint per head
        async with db.acquire(pool) as app_conn:
            assert await app_conn.fetchval("SELECT current_user") == "merchant_code_app"
            for sql in ("UPDATE audit_checkpoint SET head_id = 1", "DELETE FROM audit_checkpoint",
                        "TRUNCATE audit_checkpoint"):  # fmt: skip
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await app_conn.execute(sql)
    finally:
        await pool.close()
    assert await conn.fetchval("SELECT count(*) FROM audit_checkpoint") == 1
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await conn.execute("DELETE FROM audit_checkpoint")
