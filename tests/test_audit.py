"""The audit trail: every write is there, chained, and a changed byte is found at its row."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from merchant_code import accounts, audit, db
from tests import cli, factories
from tests import world as w


async def test_writes_are_audited_with_actor_and_request_id(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)
    response = await client.patch(
        f"/api/v1/merchant/shops/{world.shop_a}",
        json={"opening_hours": "07:00-21:00"},
        headers=world.headers("merchant_a", **{"x-request-id": "req-update-0001"}),
    )
    assert response.status_code == 200 and response.json()["changed"] == {"opening_hours": "07:00-21:00"}
    row = await conn.fetchrow(
        "SELECT a.login, e.object_id, e.request_id, e.detail FROM audit_event e"
        " JOIN account a ON a.id = e.actor_account_id WHERE e.action = 'shop.update'"
    )
    assert row is not None
    assert (row["login"], row["object_id"], row["request_id"]) == (
        "merchant_a",
        world.shop_a,
        "req-update-0001",
    )
    assert row["detail"] == {"changed": {"opening_hours": "07:00-21:00"}}
    assert await conn.fetchval("SELECT count(*) FROM profile_dirty WHERE shop_id = $1", world.shop_a_id) == 1
    logins = await conn.fetchval("SELECT count(*) FROM audit_event WHERE action = 'login'")
    assert logins == len(world.tokens)
    assert await audit.verify(conn) == (0, None)  # written, not chained yet: the sealer does that
    assert await audit.seal(conn) == logins + 1
    assert await audit.verify(conn) == (logins + 1, None)


async def test_the_admin_pages_through_the_trail_by_chain_hash_never_by_row_number(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)  # its logins are audited
    await audit.seal(conn)  # a row is named by its chain hash once the sealer has chained it
    admin = world.headers("admin")
    pages, before = [], ""
    while True:
        page = (await client.get(f"/api/v1/audit?limit=3{before}", headers=admin)).json()
        pages.append([item["id"] for item in page["items"]])
        if page["next"] is None:
            break
        before = f"&before={page['next']}"
    ids = [i for p in pages for i in p]
    stored = await conn.fetch("SELECT encode(hash, 'hex') AS h FROM audit_event ORDER BY seal_seq DESC")
    assert ids == [r["h"] for r in stored] and len(ids) >= 7 and len(pages) >= 3
    row = await conn.fetchval("SELECT max(id) FROM audit_event")
    refused = await client.get(f"/api/v1/audit?before={row}", headers=admin)
    assert refused.status_code == 400 and [e["field"] for e in refused.json()["errors"]] == ["before"]


async def test_concurrent_writers_keep_one_unbroken_chain(db_url: str) -> None:
    pool = await db.create_pool(db_url, max_size=10)
    try:

        async def write(n: int) -> None:
            async with db.acquire(pool) as conn, conn.transaction():
                await audit.append(conn, actor=None, action="test", object_type="n", object_id=str(n))

        await asyncio.gather(*(write(n) for n in range(40)))
        async with db.acquire(pool) as conn:
            assert await audit.seal(conn) == 40
            assert await audit.verify(conn) == (40, None)
    finally:
        await pool.close()


@pytest.mark.parametrize("change", ["detail", "action", "delete"])
async def test_one_changed_row_breaks_the_chain_at_that_row(
    conn: asyncpg.Connection, db_url: str, change: str
) -> None:
    async with conn.transaction():
        for n in range(5):
            await audit.append(conn, actor=None, action="shop.update", object_type="shop", object_id=f"S{n}",
                               detail={"changed": {"phone": "021-6000000" + str(n)}})  # fmt: skip
    await audit.seal(conn)
    target = await conn.fetchval("SELECT id FROM audit_event ORDER BY id OFFSET 2 LIMIT 1")
    # only a superuser who first switches the guard off can do this at all
    await conn.execute("ALTER TABLE audit_event DISABLE TRIGGER audit_event_append_only")
    if change == "detail":  # one byte: the last digit of the phone number
        await conn.execute(
            "UPDATE audit_event SET detail = jsonb_set(detail, '{changed,phone}', '\"021-60000009\"')"
            " WHERE id = $1",
            target,
        )
    elif change == "action":
        await conn.execute("UPDATE audit_event SET action = 'shop.updatf' WHERE id = $1", target)
    else:
        await conn.execute("DELETE FROM audit_event WHERE id = $1", target)
    await conn.execute("ALTER TABLE audit_event ENABLE TRIGGER audit_event_append_only")

    checked, broken = await audit.verify(conn)
    expected = target if change != "delete" else target + 1
    assert broken is not None and broken.id == expected and checked == 2

    done = await asyncio.to_thread(cli.run, db_url, "audit", "verify")
    assert done.returncode == 1
    assert f"audit chain broken at audit_event id {expected}" in done.stderr
    assert "Traceback" not in done.stderr


async def test_the_application_role_cannot_change_or_delete_audit_rows(
    db_url: str, conn: asyncpg.Connection
) -> None:
    async with conn.transaction():
        await audit.append(conn, actor=None, action="test", object_type="n")
    # the pool exactly as create_app makes it
    pool = await db.create_pool(db_url, role=await db.app_role(db_url))
    try:
        async with db.acquire(pool) as app_conn:
            assert await app_conn.fetchval("SELECT current_user") == "merchant_code_app"
            for sql in (
                "UPDATE audit_event SET action = 'x'",
                "DELETE FROM audit_event",
                "TRUNCATE audit_event",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await app_conn.execute(sql)
            async with app_conn.transaction():  # and appending is what it may do
                await audit.append(app_conn, actor=None, action="test", object_type="n")
            assert await audit.seal(app_conn) == 2  # and sealing: setting a row's seal, once
            for sql in (
                "UPDATE audit_event SET hash = sha256(hash)",  # a sealed row's seal
                "UPDATE audit_event SET seal_seq = NULL, prev_hash = NULL, hash = NULL",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                    await app_conn.execute(sql)
            with pytest.raises(asyncpg.InsufficientPrivilegeError):  # nor a seal of its own making
                await app_conn.execute(
                    "INSERT INTO audit_event (action, object_type, seal_seq, hash)"
                    " VALUES ('x', 'n', 99, '\\x00')"
                )
    finally:
        await pool.close()
    granted = await conn.fetchval(
        "SELECT has_table_privilege('merchant_code_app', 'audit_event', 'UPDATE')"
        " OR has_table_privilege('merchant_code_app', 'audit_event', 'DELETE')"
    )
    assert granted is False
    # and even the owner is stopped by the trigger
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await conn.execute("DELETE FROM audit_event")


async def test_account_commands_create_reset_and_disable(db_url: str, conn: asyncpg.Connection) -> None:
    await factories.area(conn, "310199001", "一街道")
    _, code = await factories.shop(conn)

    made = await asyncio.to_thread(
        cli.run, db_url, "account", "create", "li.inspector", "--role", "inspector", "--area", "310199001",
        "--permission", "pii:read",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "created inspector li.inspector in area 310199001" in made.stdout
    password = made.stdout.split("password: ")[1].strip()
    row = await conn.fetchrow(
        "SELECT role, permissions, password_hash FROM account WHERE login = 'li.inspector'"
    )
    assert row is not None and row["role"] == "inspector" and row["permissions"] == ["pii:read"]
    assert row["password_hash"].startswith("$argon2id$") and password not in row["password_hash"]

    owner = await asyncio.to_thread(
        cli.run, db_url, "account", "create", "wang", "--role", "merchant", "--shop", code,
        "--password-stdin", stdin="a chosen password\n",
    )  # fmt: skip
    assert owner.returncode == 0 and "password:" not in owner.stdout

    no_area = await asyncio.to_thread(cli.run, db_url, "account", "create", "x.y", "--role", "manager")
    assert no_area.returncode == 1 and "--area" in no_area.stderr and "Traceback" not in no_area.stderr
    taken = await asyncio.to_thread(cli.run, db_url, "account", "create", "wang", "--role", "admin")
    assert taken.returncode == 1 and "exists already" in taken.stderr

    reset = await asyncio.to_thread(cli.run, db_url, "account", "reset-password", "wang")
    assert reset.returncode == 0 and "password: " in reset.stdout
    disabled = await asyncio.to_thread(cli.run, db_url, "account", "disable", "wang")
    assert disabled.returncode == 0
    assert await conn.fetchval("SELECT disabled_at IS NOT NULL FROM account WHERE login = 'wang'")

    assert await audit.seal(conn) == 4  # no service runs to seal what the commands wrote
    actions = [r["action"] async for r in db.queries.list_audit_chain(conn, after=0, batch=100)]
    assert actions == ["account.create", "account.create", "account.reset-password", "account.disable"]
    verified = await asyncio.to_thread(cli.run, db_url, "audit", "verify")
    assert verified.returncode == 0 and "audit chain intact: 4 events" in verified.stdout


async def test_a_claim_code_is_issued_from_the_command_line(db_url: str, conn: asyncpg.Connection) -> None:
    _, code = await factories.shop(conn)
    done = await asyncio.to_thread(cli.run, db_url, "shop", "claim-code", code)
    assert done.returncode == 0, done.stderr
    claim_code = done.stdout.split(": ")[1].split()[0]
    stored = await conn.fetchval("SELECT claim_code_hash FROM shop WHERE code = $1", code)
    from merchant_code.auth import claim_code_hash

    assert stored == claim_code_hash(claim_code)
    unknown = await asyncio.to_thread(cli.run, db_url, "shop", "claim-code", "not-a-code")
    assert unknown.returncode == 1 and "Traceback" not in unknown.stderr


async def test_account_creation_refuses_bad_values(conn: asyncpg.Connection) -> None:
    from merchant_code.errors import InvalidInput, NotFound

    with pytest.raises(InvalidInput, match="login"):
        await accounts.create(conn, login="A!", role="admin", area=None, shops=[], name=None, permissions=[],
                              password=None)  # fmt: skip
    with pytest.raises(NotFound, match="999999"):
        await accounts.create(conn, login="abc", role="inspector", area="999999", shops=[], name=None,
                              permissions=[], password=None)  # fmt: skip
    with pytest.raises(InvalidInput, match="permission"):
        await accounts.create(conn, login="abc", role="admin", area=None, shops=[], name=None,
                              permissions=["root"], password=None)  # fmt: skip
