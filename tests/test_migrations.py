"""Migrations build the whole schema on an empty database and refuse a history that changed."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import asyncpg
import pytest

from merchant_code import db, migrate
from merchant_code.migrate import MigrationError
from tests import factories

DOMAIN_TABLES = {
    "area",
    "trade",
    "shop",
    "shop_operator",
    "licence",
    "inspection",
    "violation",
    "review",
    "sentiment_item",
    "honour",
    "staff",
    "shop_profile",
    "profile_dirty",
    "account",
    "account_shop",
    "audit_event",
    "policy",
    "delivery",
    "case_file",
    "case_event",
    "feed_source",
    "feed_run",
    "feed_reject",
    "qr_key",
    "qr_revocation",
}


@pytest.fixture
def migrations_copy(tmp_path: Path) -> Path:
    target = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS_DIR, target)
    return target


async def _tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {r["tablename"] for r in rows}


async def test_migrations_apply_in_order_to_an_empty_database(empty_db_url: str) -> None:
    conn = await db.connect(empty_db_url)
    try:
        names = await migrate.migrate(conn)
        assert names == [m.name for m in migrate.load()]
        assert await _tables(conn) >= DOMAIN_TABLES
        recorded = await migrate.applied(conn)
        assert [(r.name, r.checksum) for r in recorded] == [(m.name, m.checksum) for m in migrate.load()]
        assert await migrate.migrate(conn) == []
    finally:
        await conn.close()


async def test_an_applied_file_that_was_edited_is_refused(empty_db_url: str, migrations_copy: Path) -> None:
    conn = await db.connect(empty_db_url)
    try:
        await migrate.migrate(conn, migrate.load(migrations_copy))
        edited = migrations_copy / "0002_shop_records.sql"
        edited.write_text(edited.read_text() + "\n-- a harmless-looking comment\n")
        with pytest.raises(MigrationError, match=r"0002_shop_records\.sql was edited"):
            await migrate.migrate(conn, migrate.load(migrations_copy))
    finally:
        await conn.close()


async def test_a_failing_migration_is_rolled_back_and_named(empty_db_url: str, migrations_copy: Path) -> None:
    (migrations_copy / "0099_broken.sql").write_text(
        "CREATE TABLE half_done (id int);\nALTER TABLE no_such_table ADD COLUMN x int;\n"
    )
    conn = await db.connect(empty_db_url)
    try:
        with pytest.raises(MigrationError, match=r"0099_broken\.sql failed and was rolled back"):
            await migrate.migrate(conn, migrate.load(migrations_copy))
        assert "half_done" not in await _tables(conn)
        assert "shop" in await _tables(conn)  # the good files before it stay applied
        assert 99 not in {r.version for r in await migrate.applied(conn)}
    finally:
        await conn.close()


def test_a_file_not_named_like_a_migration_is_refused(migrations_copy: Path) -> None:
    (migrations_copy / "add_things.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"add_things\.sql: migration files are named"):
        migrate.load(migrations_copy)


async def test_two_instances_migrating_at_once_apply_each_file_once(empty_db_url: str) -> None:
    conns = [await db.connect(empty_db_url) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate.migrate(c) for c in conns))
        applied_names = sorted(n for names in results for n in names)
        assert applied_names == sorted(m.name for m in migrate.load())
    finally:
        for c in conns:
            await c.close()


async def test_the_schema_refuses_a_shop_code_that_is_not_crockford(conn: asyncpg.Connection) -> None:
    area = await factories.district(conn)
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute(
            "INSERT INTO shop (code, uscc, name, trade, area_id, address)"
            " VALUES ($1, $2, 'x', 'retail', $3, 'y')",
            "ILOU000000000",
            "91310000MA1FL4B24G",
            area,
        )


async def test_profiles_stored_whole_read_the_same_once_only_their_private_parts_are_kept(
    empty_db_url: str,
) -> None:
    """0023 keeps the private parts of the stored merchant document; the merchant's and the
    inspector's documents then read exactly as they were stored."""
    files = migrate.load()
    before = [m for m in files if m.name < "0023"]
    conn = await db.connect(empty_db_url)
    try:
        await migrate.migrate(conn, before)
        shop_id, code = await factories.shop(conn)
        citizen = {"code": code, "name": "老王面馆", "grade": "B", "licences": [{"kind": "business"}],
                   "inspections": [{"result": "pass"}], "notices": [], "open_cases": 0}
        private = {"uscc": "91310000MA1FL1234X", "area_code": "310104", "owner_name": "王伟",
                   "owner_phone": "13800138000", "owner_id_number": "110101199003071234",
                   "licences": [{"kind": "business", "number": "L-1"}], "submissions": [],
                   "honour_submissions": [], "inspections": [{"result": "pass", "score": 91}],
                   "staff": [{"name": "李娜"}], "cases": [], "notices": [{"title": "通知"}]}
        reasons = [{"code": "grade_c", "points": 10}]
        merchant = citizen | private
        full = merchant | {"risk_score": 10, "risk_reasons": reasons}
        await conn.execute(
            "INSERT INTO shop_profile (shop_id, code, citizen_doc, merchant_doc, full_doc, risk_score,"
            " risk_reasons) VALUES ($1, $2, $3, $4, $5, 10, $6)",
            shop_id, code, citizen, merchant, full, reasons,
        )
        assert await migrate.migrate(conn) == [m.name for m in files if m.name >= "0023"]
        row = await db.queries.get_full_profile(conn, code=code)
        assert (row["citizen_doc"], row["merchant_doc"], row["full_doc"]) == (citizen, merchant, full)
    finally:
        await conn.close()
