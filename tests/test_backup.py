"""`merchant-code backup` / `restore`: a round trip keeps every row, a dump taken while writes go
on is of one instant, and a target or a file that is not right is refused in one line."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
from litestar.testing import AsyncTestClient

from merchant_code import audit, db, migrate
from merchant_code import backup as backups
from tests import world as w

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MERCHANT_CODE_")}
    env["MERCHANT_CODE_DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "merchant_code", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def _one_clear_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("merchant-code: error: ")
    return lines[0]


async def _tables(url: str) -> dict[str, tuple[int, str]]:
    """Every table of schema public: (rows, md5 of the sorted md5s of its rows), computed here."""
    conn = await asyncpg.connect(url)
    try:
        names = [
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ]
        found = {}
        for name in names:
            row = await conn.fetchrow(
                "SELECT count(*) AS n, md5(string_agg(md5(x::text), '' ORDER BY md5(x::text))) AS sum"
                f' FROM public."{name}" x'
            )
            assert row is not None
            found[name] = (row["n"], row["sum"] or "")
        return found
    finally:
        await conn.close()


async def test_a_round_trip_keeps_every_row_the_chain_the_grants_and_the_migrations(
    conn: asyncpg.Connection, client: AsyncTestClient[Any], db_url: str, empty_db_url: str, tmp_path: Path
) -> None:
    world = await w.build(conn, client)
    changed = await client.patch(
        f"/api/v1/merchant/shops/{world.shop_a}",
        json={"opening_hours": "07:00-21:00"},
        headers=world.headers("merchant_a"),
    )
    assert changed.status_code == 200, changed.text
    complaint = await client.post(
        f"/api/v1/shops/{world.shop_b}/complaints", json={"category": "hygiene", "text": "后厨地面积水"}
    )
    assert complaint.status_code == 201, complaint.text
    async with conn.transaction():
        await audit.append(
            conn,
            actor=None,
            action="test.detail",
            object_type="shop",
            detail={"x": 0.1, "名": "值", "n": [1, 2e20]},
        )
    await conn.execute(
        "INSERT INTO auth_attempt (key) SELECT 'ip:10.0.0.' || g FROM generate_series(1, 50) g"
    )
    await audit.seal(conn)
    source = await _tables(db_url)
    assert source["audit_event"][0] >= 10 and source["case_event"][0] >= 1

    dump = tmp_path / "merchant.dump"
    made = _cli("backup", "--out", str(dump), database_url=db_url)
    assert made.returncode == 0, made.stderr
    assert "consistent while writes go on" in made.stdout
    assert dump.is_file() and not dump.with_name("merchant.dump.partial").exists()
    manifest = json.loads(backups.manifest_path(dump).read_text())
    assert {t["table"]: t["rows"] for t in manifest["tables"]} == {k: v[0] for k, v in source.items()}
    assert manifest["dump_sha256"] == hashlib.sha256(dump.read_bytes()).hexdigest()

    done = _cli("restore", "--from", str(dump), "--into", empty_db_url, database_url=db_url)
    assert done.returncode == 0, done.stderr
    assert f"verified {len(source)} tables" in done.stdout

    assert await _tables(empty_db_url) == source
    restored = await db.connect(empty_db_url)  # with the jsonb codec audit.verify reads with
    try:
        assert await audit.verify(restored) == (source["audit_event"][0], None)
        assert await migrate.migrate(restored) == []
        # the guards came back after the data: the audit trail still refuses to be rewritten
        try:
            await restored.execute("UPDATE audit_event SET action = 'forged' WHERE id = 1")
            raise AssertionError("audit_event accepted an UPDATE after the restore")
        except asyncpg.InsufficientPrivilegeError:
            pass
        # the app role's grants were restored with the tables
        rights = await restored.fetchrow(
            "SELECT has_table_privilege('merchant_code_app', 'shop', 'SELECT') AS read_shop,"
            " has_column_privilege('merchant_code_app', 'audit_event', 'action', 'INSERT') AS append,"
            " has_table_privilege('merchant_code_app', 'audit_event', 'UPDATE') AS rewrite"
        )
        assert rights is not None and dict(rights) == {"read_shop": True, "append": True, "rewrite": False}
        async with restored.transaction():
            await restored.execute("SET LOCAL ROLE merchant_code_app")
            assert await restored.fetchval("SELECT count(*) FROM shop") == source["shop"][0]
            # the sequences came back too: the next event follows the restored ones
            await audit.append(restored, actor=None, action="test.after_restore", object_type="shop")
            await audit.seal(restored)  # as the service would, under the same role
        assert await audit.verify(restored) == (source["audit_event"][0] + 1, None)
    finally:
        await restored.close()


async def test_a_backup_taken_while_writes_go_on_is_of_one_instant(
    db_url: str, empty_db_url: str, tmp_path: Path
) -> None:
    writer = await asyncpg.connect(db_url)
    stop = asyncio.Event()
    progress = asyncio.Condition()
    written = 0

    async def write() -> None:
        nonlocal written
        while not stop.is_set():
            await writer.execute("INSERT INTO auth_attempt (key) VALUES ('ip:192.0.2.1')")  # one commit each
            async with progress:
                written += 1
                progress.notify_all()

    task = asyncio.create_task(write())
    try:
        async with progress:
            await progress.wait_for(lambda: written >= 50)
        made = await backups.backup(db_url, tmp_path / "busy.dump")
        before = written
        async with progress:
            await progress.wait_for(lambda: written >= before + 50)
    finally:
        stop.set()
        await task
        await writer.close()
    counts = {t.table: t.rows for t in made.manifest.tables}
    assert 50 <= counts["auth_attempt"] < written  # the snapshot fell in the middle of the writes

    restored = await backups.restore(empty_db_url, made.path)
    assert restored.checksums and restored.tables == len(counts)
    # counted here, not by the code under test: the dump holds exactly the manifest's instant
    assert {name: rows for name, (rows, _) in (await _tables(empty_db_url)).items()} == counts


async def test_a_target_or_a_file_that_is_not_right_is_one_line(
    db_url: str, empty_db_url: str, tmp_path: Path
) -> None:
    made = await backups.backup(db_url, tmp_path / "small.dump", checksums=False)
    tables = len(made.manifest.tables)

    busy = _cli("restore", "--from", str(made.path), "--into", db_url, database_url=db_url)
    assert f"is not empty: {tables} table(s) in schema public" in _one_clear_line(busy)

    nowhere = _cli("backup", "--out", str(tmp_path / "no" / "such" / "x.dump"), database_url=db_url)
    assert "does not exist" in _one_clear_line(nowhere)

    cut = tmp_path / "cut.dump"
    data = made.path.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    manifest = json.loads(backups.manifest_path(made.path).read_text())
    backups.manifest_path(cut).write_text(json.dumps(manifest))
    damaged = _cli("restore", "--from", str(cut), "--into", empty_db_url, database_url=db_url)
    assert "is damaged" in _one_clear_line(damaged)

    # a manifest that vouches for the cut file: pg_restore itself fails, and rolls everything back
    manifest.update(dump_bytes=cut.stat().st_size, dump_sha256=hashlib.sha256(cut.read_bytes()).hexdigest())
    backups.manifest_path(cut).write_text(json.dumps(manifest))
    failed = _cli("restore", "--from", str(cut), "--into", empty_db_url, database_url=db_url)
    assert "pg_restore into" in _one_clear_line(failed)
    empty = await asyncpg.connect(empty_db_url)
    try:
        assert await backups.public_tables(empty) == 0
    finally:
        await empty.close()


def test_the_password_goes_to_pg_dump_by_environment_not_on_its_command_line() -> None:
    target, env = backups.libpq_target("postgresql://owner:p%40ss@db.example:5432/merchant?sslmode=require")
    assert target == "postgresql://owner@db.example:5432/merchant?sslmode=require"
    assert env["PGPASSWORD"] == "p@ss"
    socket_url = "postgresql://postgres:@/merchant_code?host=/tmp/pg"
    assert backups.libpq_target(socket_url)[0] == "postgresql://postgres@/merchant_code?host=/tmp/pg"
