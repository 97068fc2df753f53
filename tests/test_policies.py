"""Policy pushes: who a policy reaches, when, the inbox and its read receipts, reach, reminders."""

from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from merchant_code import auth, db, policies, profiles
from merchant_code.errors import Conflict, InvalidInput
from merchant_code.scheduler import jobs_state
from merchant_code.settings import Settings
from tests import factories

TZ = "Asia/Shanghai"


@pytest.fixture
def now() -> datetime.datetime:
    """The test's clock, read once as it starts and told to every call that decides by the time, so
    a slow run never puts a send time in the past."""
    return datetime.datetime.now(datetime.UTC)


def manager(area_path: str = "310199", account_id: int = 1) -> auth.Principal:
    return auth.Principal(
        account_id=account_id, login="m", role="manager", session_id="s", area_path=area_path
    )


async def _account(conn: asyncpg.Connection) -> int:
    return await factories.account(conn, "manager1", "manager", area_code="310199")


async def district(conn: asyncpg.Connection) -> dict[str, int]:
    """Catering and retail shops in subdistricts 001 (with a grid below it) and 002, one closed."""
    sub1 = await factories.area(conn, "310199001", "一街道")
    sub2 = await factories.area(conn, "310199002", "二街道")
    grid = await conn.fetchval(
        "INSERT INTO area (parent_id, level, code, path, name) VALUES ($1, 'grid', '310199001007',"
        " '310199.310199001.310199001007', '七网格') RETURNING id",
        sub1,
    )
    shops: dict[str, int] = {}
    for name, trade, area, status in [
        ("cat1", "catering", sub1, "active"),
        ("cat_grid", "catering", grid, "active"),
        ("cat_suspended", "catering", sub1, "suspended"),
        ("cat_closed", "catering", sub1, "closed"),
        ("retail1", "retail", sub1, "active"),
        ("cat2", "catering", sub2, "active"),
    ]:
        shop_id, _ = await factories.shop(conn, name=name, trade=trade, status=status)
        await factories.move_shop(conn, shop_id, area)
        shops[name] = shop_id
    return shops


async def delivered_to(conn: asyncpg.Connection, public_id: str) -> set[int]:
    rows = await conn.fetch(
        "SELECT d.shop_id FROM delivery d JOIN policy p ON p.id = d.policy_id"
        " WHERE p.public_id::text = $1 AND d.channel = 'inbox'",
        public_id,
    )
    return {r["shop_id"] for r in rows}


async def test_audience_is_the_trade_in_the_area_and_below_and_never_a_closed_shop(
    conn: asyncpg.Connection, now: datetime.datetime
) -> None:
    shops = await district(conn)
    me = manager(account_id=await _account(conn))
    data = policies.PolicyIn(
        title="食品安全周", body_md="请**自查**", area_codes=["310199001"], trades=["catering"]
    )
    preview = await policies.audience(conn, me, data, now.date())
    public_id = await policies.create(conn, me, data, tz=TZ)
    assert await policies.send_due(conn, TZ) == 3
    want = {shops["cat1"], shops["cat_grid"], shops["cat_suspended"]}
    assert await delivered_to(conn, public_id) == want
    assert preview.shops == len(want)
    # a second run of the job (another instance, a restart) adds nothing
    assert await policies.send_due(conn, TZ) == 0
    assert await conn.fetchval("SELECT status FROM policy WHERE public_id::text = $1", public_id) == "sent"


async def test_filters_narrow_the_audience(conn: asyncpg.Connection, now: datetime.datetime) -> None:
    shops = await district(conn)
    me = manager(account_id=await _account(conn))
    today = now.date()
    await factories.licence(conn, shops["cat1"], valid_to=today + datetime.timedelta(days=10))
    await factories.licence(conn, shops["cat_grid"], valid_to=today + datetime.timedelta(days=100))
    await factories.inspection(conn, shops["cat2"], on=today, result="fail", grade="C")
    async with conn.transaction():
        await profiles.rebuild(conn, list(shops.values()))
    expiring = policies.PolicyIn(
        title="续证提醒",
        body_md="x",
        area_codes=["310199"],
        filters=policies.Filters(licence_expires_within_days=30),
    )
    graded_c = policies.PolicyIn(
        title="C级整改", body_md="x", area_codes=["310199"], filters=policies.Filters(grades=["C"])
    )
    first = await policies.create(conn, me, expiring, tz=TZ)
    second = await policies.create(conn, me, graded_c, tz=TZ)
    await policies.send_due(conn, TZ)
    assert await delivered_to(conn, first) == {shops["cat1"]}
    assert await delivered_to(conn, second) == {shops["cat2"]}


async def test_a_manager_targets_only_inside_their_own_area(
    conn: asyncpg.Connection, now: datetime.datetime
) -> None:
    await district(conn)
    me = manager("310199.310199002", account_id=await _account(conn))
    data = policies.PolicyIn(title="t", body_md="b", area_codes=["310199001"])
    with pytest.raises(InvalidInput) as caught:
        await policies.create(conn, me, data, tz=TZ)
    assert caught.value.field == "area_codes"
    with pytest.raises(InvalidInput):
        await policies.audience(conn, me, data, now.date())
    with pytest.raises(InvalidInput) as unknown:
        await policies.create(
            conn,
            me,
            policies.PolicyIn(title="t", body_md="b", area_codes=["310199002"], trades=["nope"]),
            tz=TZ,
        )
    assert unknown.value.field == "trades"


async def test_a_scheduled_policy_waits_for_its_time_can_be_edited_until_then_and_then_only_corrected(
    conn: asyncpg.Connection, now: datetime.datetime
) -> None:
    shops = await district(conn)
    me = manager(account_id=await _account(conn))
    later = now + datetime.timedelta(hours=2)
    data = policies.PolicyIn(title="明日检查", body_md="b", area_codes=["310199002"], send_at=later)
    public_id = await policies.create(conn, me, data, tz=TZ, now=now)
    assert await policies.send_due(conn, TZ, now=now) == 0
    await policies.edit(
        conn,
        me,
        public_id,
        policies.PolicyIn(title="改期", body_md="b2", area_codes=["310199"], send_at=later),
        tz=TZ,
        now=now,
    )
    with pytest.raises(Conflict):
        await policies.correct(conn, me, public_id, policies.CorrectionIn(title="c", body_md="c"))
    assert await policies.send_due(conn, TZ, now=later + datetime.timedelta(seconds=1)) == 5
    with pytest.raises(Conflict):
        await policies.edit(conn, me, public_id, data, tz=TZ, now=now)
    with pytest.raises(Conflict):
        await policies.cancel(conn, me, public_id)
    correction = await policies.correct(
        conn, me, public_id, policies.CorrectionIn(title="更正", body_md="时间有误")
    )
    await policies.send_due(conn, TZ)
    assert await delivered_to(conn, correction) == await delivered_to(conn, public_id)
    assert shops["cat_closed"] not in await delivered_to(conn, correction)


async def test_a_cancelled_policy_is_never_sent(conn: asyncpg.Connection, now: datetime.datetime) -> None:
    await district(conn)
    me = manager(account_id=await _account(conn))
    data = policies.PolicyIn(
        title="t", body_md="b", area_codes=["310199"], send_at=now + datetime.timedelta(minutes=5)
    )
    public_id = await policies.create(conn, me, data, tz=TZ, now=now)
    await policies.cancel(conn, me, public_id)
    assert await policies.send_due(conn, TZ, now=now + datetime.timedelta(days=1)) == 0
    assert await delivered_to(conn, public_id) == set()


async def test_a_recurring_policy_missed_while_down_is_sent_once_and_then_keeps_its_rhythm(
    conn: asyncpg.Connection,
) -> None:
    await district(conn)
    me = manager(account_id=await _account(conn))
    data = policies.PolicyIn(title="每日提醒", body_md="b", area_codes=["310199002"], cron="0 9 * * *")
    public_id = await policies.create(conn, me, data, tz=TZ)
    first = await conn.fetchval("SELECT next_at FROM policy WHERE public_id::text = $1", public_id)
    assert first.astimezone(datetime.timezone(datetime.timedelta(hours=8))).hour == 9
    # down for three days: one delivery per shop, not three
    back = first + datetime.timedelta(days=3, minutes=5)
    assert await policies.send_due(conn, TZ, now=back) == 1
    assert await policies.send_due(conn, TZ, now=back) == 0
    following = await conn.fetchval("SELECT next_at FROM policy WHERE public_id::text = $1", public_id)
    assert following > back and following - back < datetime.timedelta(days=1)
    with pytest.raises(InvalidInput) as bad:
        await policies.create(
            conn, me, policies.PolicyIn(title="t", body_md="b", area_codes=["310199"], cron="61 * * *"), tz=TZ
        )
    assert bad.value.field == "cron"


async def test_inbox_read_receipts_and_reach(conn: asyncpg.Connection) -> None:
    shops = await district(conn)
    me = manager(account_id=await _account(conn))
    public_id = await policies.create(
        conn,
        me,
        policies.PolicyIn(
            title="政策",
            body_md="<script>alert(1)</script> [x](javascript:alert(1))",
            area_codes=["310199001"],
            trades=["catering"],
        ),
        tz=TZ,
    )
    await policies.send_due(conn, TZ)
    merchant = auth.Principal(
        account_id=me.account_id, login="o", role="merchant", session_id="s", shop_ids=(shops["cat1"],)
    )
    assert (await policies.inbox(conn, merchant)).items == []  # materialised, not yet delivered
    assert await policies.deliver_inbox(conn) == 3
    box = await policies.inbox(conn, merchant)
    assert box.unread == 1 and len(box.items) == 1
    item = box.items[0]
    assert "<script>" not in item.body_html and 'href="javascript' not in item.body_html
    row = await policies.policy_for(conn, me, public_id)
    assert (await policies.view(conn, row)).reach.read == 0
    opened = await policies.read_item(conn, merchant, item.id)
    assert opened.read_at is not None
    assert (await policies.inbox(conn, merchant)).unread == 0
    reach = (await policies.view(conn, row)).reach
    assert (reach.targeted, reach.delivered, reach.read) == (3, 3, 1)
    # the follow-up list: the two that have not read it
    csv_text = await policies.unread_csv(conn, row["id"], days=0)
    assert len(csv_text.strip().splitlines()) == 3
    other = auth.Principal(
        account_id=me.account_id, login="x", role="merchant", session_id="s", shop_ids=(shops["cat2"],)
    )
    with pytest.raises(Exception, match="no such message"):
        await policies.read_item(conn, other, item.id)


async def test_reminders_are_sent_once_each(conn: asyncpg.Connection, now: datetime.datetime) -> None:
    shops = await district(conn)
    today = now.date()
    await factories.licence(conn, shops["cat1"], valid_to=today + datetime.timedelta(days=20))
    await factories.licence(conn, shops["cat2"], valid_to=today + datetime.timedelta(days=5))
    await factories.licence(conn, shops["retail1"], valid_to=today - datetime.timedelta(days=2))
    await factories.licence(conn, shops["cat_closed"], valid_to=today + datetime.timedelta(days=5))
    await conn.execute(
        "INSERT INTO inspection (shop_id, source, external_id, inspected_on, result, rectify_due)"
        " VALUES ($1, 'test', 'r1', $2, 'rectify', $3)",
        shops["cat_grid"],
        today - datetime.timedelta(days=10),
        today + datetime.timedelta(days=2),
    )
    assert await policies.remind(conn, today) == 4
    assert await policies.remind(conn, today) == 0
    kinds = dict(
        await conn.fetch(
            "SELECT d.shop_id, p.reminder FROM delivery d JOIN policy p ON p.id = d.policy_id"
            " WHERE d.channel = 'inbox'"
        )
    )
    assert kinds == {
        shops["cat1"]: "licence_30",
        shops["cat2"]: "licence_7",
        shops["retail1"]: "licence_expired",
        shops["cat_grid"]: "rectify_due",
    }
    await policies.deliver_inbox(conn)
    merchant = auth.Principal(
        account_id=1, login="o", role="merchant", session_id="s", shop_ids=(shops["cat2"],)
    )
    item = (await policies.inbox(conn, merchant, en=True)).items[0]
    assert item.scope == "shop" and "7 days" in item.title


async def test_one_instance_at_a_time_adds_the_reminders(
    conn: asyncpg.Connection, db_url: str, settings: Settings
) -> None:
    shops = await district(conn)
    today = datetime.datetime.now(ZoneInfo(settings.timezone)).date()
    await factories.licence(conn, shops["cat2"], valid_to=today + datetime.timedelta(days=5))
    pool = await db.create_pool(db_url, min_size=1, max_size=2)
    other = await db.connect(db_url)
    reminders = "SELECT count(*) FROM delivery WHERE channel = 'inbox'"
    try:
        async with other.transaction():  # another instance is adding them
            await other.fetchval("SELECT pg_advisory_xact_lock($1)", policies.REMINDERS_KEY)
            await policies.reminder_job(jobs_state(pool, settings))
            assert await conn.fetchval(reminders) == 0
        await policies.reminder_job(jobs_state(pool, settings))
        assert await conn.fetchval(reminders) == 1
    finally:
        await other.close()
        await pool.close()
