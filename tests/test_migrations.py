"""Migrations build the whole schema on an empty database and refuse a history that changed."""

from __future__ import annotations

import asyncio
import re
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
    inspector's documents then read exactly as they were stored (but for the notices, which 0038
    takes out)."""
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
        # as stored, less the copied notices (0038: the views join them when they are made)
        unstored = tuple({k: v for k, v in d.items() if k != "notices"} for d in (citizen, merchant, full))
        assert (row["citizen_doc"], row["merchant_doc"], row["full_doc"]) == unstored
    finally:
        await conn.close()


async def test_cases_get_numbers_of_their_own_and_reporters_keep_theirs(empty_db_url: str) -> None:
    """0024: every case gets its own random number; a complaint's old number (its reporter's) stays
    the reporter's tracking number; nothing else is lost, and what the shop's owner reads of the
    case (the profile's open cases, an overdue reminder) names it by its new number."""
    from merchant_code import cases
    from merchant_code.errors import NotFound

    files = migrate.load()
    conn = await db.connect(empty_db_url)
    try:
        await migrate.migrate(conn, [m for m in files if m.name < "0024"])
        shop_id, code = await factories.shop(conn)
        old = {"complaint": "TS-AAAAA-BBBBB", "inspection": "TS-CCCCC-DDDDD"}
        ids = {}
        for source, number in old.items():
            ids[source] = await conn.fetchval(
                "INSERT INTO case_file (public_id, shop_id, source, category, description, reporter_phone)"
                " VALUES ($1, $2, $3, 'food_safety', $4, '13611112222') RETURNING id",
                number, shop_id, source, f"{source} case",
            )
            await conn.execute(
                "INSERT INTO case_event (case_id, kind, to_status, public)"
                " VALUES ($1, 'opened', 'open', true)",
                ids[source],
            )
        await conn.execute(
            "INSERT INTO case_report (public_id, case_id, reporter_phone)"
            " VALUES ('TS-EEEEE-FFFFF', $1, '139')",
            ids["complaint"],
        )
        gone = "CS-GONE0-00000"  # a case the profile lists that is no more: left as it is
        listed = [{"id": n, "category": "food_safety", "status": "open"} for n in [*old.values(), gone]]
        await conn.execute(
            "INSERT INTO shop_profile (shop_id, code, citizen_doc, private_doc) VALUES ($1, $2, '{}', $3)",
            shop_id, code, {"cases": listed, "staff": []},
        )
        policy = await db.queries.ensure_reminder(
            conn, reminder="rectification_overdue", title="整改已逾期", body_md="整改已逾期"
        )
        await conn.execute(
            "INSERT INTO delivery (policy_id, shop_id, occurrence, channel, detail)"
            " VALUES ($1, $2, now(), 'inbox', $3)",
            policy, shop_id, {"case": old["inspection"], "due": "2026-01-31"},
        )

        await migrate.migrate(conn)

        rows = {r["source"]: r for r in await conn.fetch("SELECT * FROM case_file")}
        assert {s: (r["id"], r["description"], r["reporter_phone"]) for s, r in rows.items()} == {
            s: (ids[s], f"{s} case", "13611112222") for s in old
        }
        assert rows["complaint"]["tracking_number"] == old["complaint"]
        assert rows["inspection"]["tracking_number"] is None  # only staff ever had that number
        new = {s: r["public_id"] for s, r in rows.items()}
        shape = re.compile(r"CS-[0-9A-HJKMNP-TV-Z]{5}-[0-9A-HJKMNP-TV-Z]{5}")  # Crockford symbols
        assert all(shape.fullmatch(n) for n in new.values())
        assert not set(new.values()) & set(old.values())
        assert await conn.fetchval("SELECT count(*) FROM case_event") == 2
        # each reporter still follows the case with their number; the old numbers open no case of staff's
        assert (await cases.tracking(conn, old["complaint"])).events[0].status == "open"
        assert (await cases.tracking(conn, "TS-EEEEE-FFFFF")).joined
        with pytest.raises(NotFound):
            await cases.tracking(conn, old["inspection"])
        for number in old.values():
            assert await db.queries.get_case(conn, public_id=number) is None
        private = await conn.fetchval("SELECT private_doc FROM shop_profile WHERE shop_id = $1", shop_id)
        assert [c["id"] for c in private["cases"]] == [new["complaint"], new["inspection"], gone]
        # queued for a rebuild (0024's mark, and 0037's of every shop: a shop may be queued twice, 0036)
        queued = "SELECT count(DISTINCT shop_id) FROM profile_dirty WHERE shop_id = $1"
        assert await conn.fetchval(queued, shop_id) == 1
        detail = await conn.fetchval("SELECT detail FROM delivery WHERE policy_id = $1", policy)
        assert detail == {"case": new["inspection"], "due": "2026-01-31"}
        # a case opened from now on is numbered by the database, at random
        made = await conn.fetchval(
            "INSERT INTO case_file (shop_id, source, category)"
            " VALUES ($1, 'manual', 'other') RETURNING public_id",
            shop_id,
        )
        assert shape.fullmatch(made) and made not in new.values()
    finally:
        await conn.close()


async def test_a_case_number_is_fifty_random_bits(conn: asyncpg.Connection) -> None:
    """Every one of the ten symbols takes all 32 values (none is a UUID's fixed version or variant
    bits), so a case number is as hard to guess as a tracking number."""
    numbers = [r[0] for r in await conn.fetch("SELECT new_case_number() FROM generate_series(1, 2000)")]
    assert len(set(numbers)) == len(numbers)
    symbols = [n.removeprefix("CS-").replace("-", "") for n in numbers]
    assert all(len({s[i] for s in symbols}) == 32 for i in range(10))


async def test_existing_inbox_messages_and_routing_rows_get_public_ids(empty_db_url: str) -> None:
    """0031: every delivery and routing row there before gets a public id of its own, and an
    existing inbox message opens by it."""
    from merchant_code import auth, policies

    files = migrate.load()
    conn = await db.connect(empty_db_url)
    try:
        await migrate.migrate(conn, [m for m in files if m.name < "0031"])
        shop_id, _ = await factories.shop(conn)
        policy = await conn.fetchval(
            "INSERT INTO policy (title, body_md, area_ids, status) VALUES ('通知', '内容', '{}', 'sent')"
            " RETURNING id"
        )
        await conn.execute(
            "INSERT INTO delivery (policy_id, shop_id, occurrence, channel, status, delivered_at)"
            " SELECT $1, $2, now() - make_interval(days => n), c, 'delivered', now()"
            " FROM generate_series(1, 3) n, unnest(ARRAY['inbox', 'sms']) c",
            policy, shop_id,
        )  # fmt: skip
        routes = await conn.fetchval("SELECT count(*) FROM case_route")

        await migrate.migrate(conn)

        ids = [r[0] for r in await conn.fetch("SELECT public_id FROM delivery")]
        assert len(ids) == len(set(ids)) == 6
        route_ids = [r[0] for r in await conn.fetch("SELECT public_id FROM case_route")]
        assert len(route_ids) == len(set(route_ids)) == routes > 0
        account = await factories.account(conn, "owner", "merchant", shop_ids=(shop_id,))
        merchant = auth.Principal(account_id=account, login="owner", role="merchant", session_id="s",
                                  shop_ids=(shop_id,))  # fmt: skip
        box = await policies.inbox(conn, merchant)
        assert len(box.items) == 3
        opened = await policies.read_item(conn, merchant, box.items[0].id)
        assert opened.title == "通知" and opened.read_at is not None
    finally:
        await conn.close()
