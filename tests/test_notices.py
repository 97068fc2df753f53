"""Notices are joined to a shop's views when they are made, not copied into its profile: a push to
a whole trade rewrites no profile, yet every citizen view of the trade in the area shows it (page,
JSON, public API) within a watermark poll, with a new ETag; reminders and narrowed policies stay in
the owner's view, with their read state, and reading one changes no profile either."""

from __future__ import annotations

import asyncio
import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import asyncpg
from litestar.testing import AsyncTestClient

from merchant_code import auth, db, db_health, notices, policies, profiles, rendering
from tests import factories, waiting
from tests import world as w
from tests.test_policies import TZ, district, manager
from tests.watermark import caught_up

JSON = {"accept": "application/json"}


async def versions(conn: asyncpg.Connection) -> dict[int, int]:
    return dict(await conn.fetch("SELECT shop_id, version FROM shop_profile"))


async def codes(conn: asyncpg.Connection, shops: dict[str, int]) -> dict[str, str]:
    rows = await conn.fetch("SELECT id, code FROM shop WHERE id = ANY($1::bigint[])", list(shops.values()))
    by_id = {r["id"]: r["code"] for r in rows}
    return {name: by_id[shop_id] for name, shop_id in shops.items()}


async def push(conn: asyncpg.Connection, title: str, area: str, trades: list[str], **more: Any) -> str:
    login = f"manager{await conn.fetchval('SELECT count(*) FROM account')}"
    me = manager(account_id=await factories.account(conn, login, "manager", area_code="310199"))
    public_id = await policies.create(
        conn,
        me,
        policies.PolicyIn(title=title, body_md="正文", area_codes=[area], trades=trades, **more),
        tz=TZ,
    )
    await policies.send_due(conn, TZ)
    await policies.deliver_inbox(conn)
    return public_id


async def test_a_push_to_a_whole_trade_rewrites_no_profile_and_every_citizen_view_shows_it(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    shops = await district(conn)
    code = await codes(conn, shops)
    await profiles.drain(conn)
    before = await client.get(f"/s/{code['cat1']}", headers=JSON)
    assert before.json()["notices"] == []
    etag = before.headers["etag"]
    written = await versions(conn)

    await push(conn, "夏季食品安全检查", "310199001", ["catering"])

    assert await conn.fetchval("SELECT count(*) FROM delivery WHERE status = 'delivered'") == 3
    assert await conn.fetchval("SELECT count(*) FROM profile_dirty") == 0  # nothing to rebuild
    assert await versions(conn) == written
    await caught_up(client.app)
    for name in ("cat1", "cat_grid", "cat_suspended"):  # the trade in the area and below it
        body = (await client.get(f"/s/{code[name]}", headers=JSON)).json()
        assert [n["title"] for n in body["notices"]] == ["夏季食品安全检查"], name
        assert body["sticker"]["status"] == "unsigned" and body["code"] == code[name]  # still whole
        zh = (await client.get(f"/s/{code[name]}")).text
        assert "行业通知" in zh and "夏季食品安全检查" in zh and "<!--notices-->" not in zh
        assert "Notices for this trade" in (await client.get(f"/s/{code[name]}?lang=en")).text
    for name in ("retail1", "cat2", "cat_closed"):  # another trade, another area, a closed shop
        body = (await client.get(f"/s/{code[name]}", headers=JSON)).json()
        assert body["notices"] == [], name
        assert "夏季食品安全检查" not in (await client.get(f"/s/{code[name]}")).text

    # a browser that had the page before the push is sent it again, then told it has it
    again = await client.get(f"/s/{code['cat1']}", headers={**JSON, "if-none-match": etag})
    assert again.status_code == 200 and again.headers["etag"] != etag
    same = await client.get(f"/s/{code['cat1']}", headers={**JSON, "if-none-match": again.headers["etag"]})
    assert same.status_code == 304

    public = (await client.get(f"/api/v1/shops/{code['cat_grid']}")).json()
    assert [n["title"] for n in public["notices"]] == ["夏季食品安全检查"]
    assert (await client.get(f"/api/v1/shops/{code['retail1']}")).json()["notices"] == []

    # the newest three, newest first, as before
    for title in ("二", "三", "四"):
        await push(conn, f"通知{title}", "310199", [])
    await caught_up(client.app)
    body = (await client.get(f"/s/{code['cat1']}", headers=JSON)).json()
    assert [n["title"] for n in body["notices"]] == ["通知四", "通知三", "通知二"]
    assert await versions(conn) == written


async def test_reminders_and_narrowed_policies_stay_in_the_owners_view_with_their_read_state(
    client: AsyncTestClient[Any], conn: asyncpg.Connection, today: datetime.date
) -> None:
    shops = await district(conn)
    code = await codes(conn, shops)
    await factories.account(conn, "owner1", "merchant", shop_ids=(shops["cat1"],))
    owner = {**JSON, "authorization": f"Bearer {await w.log_in(client, 'owner1')}"}
    await factories.licence(conn, shops["cat1"], valid_to=today + datetime.timedelta(days=5))
    await profiles.drain(conn)
    written = await versions(conn)

    assert await policies.remind(conn, today) == 1
    await push(
        conn,
        "即将到期证照自查",
        "310199001",
        ["catering"],
        filters=policies.Filters(licence_expires_within_days=30),
    )
    await push(conn, "行业大会", "310199001", ["catering"])
    assert await conn.fetchval("SELECT count(*) FROM profile_dirty") == 0
    assert await versions(conn) == written
    await caught_up(client.app)

    citizen = (await client.get(f"/s/{code['cat1']}", headers=JSON)).json()
    assert [n["title"] for n in citizen["notices"]] == ["行业大会"]  # no reminder, no narrowed policy
    mine = (await client.get(f"/s/{code['cat1']}", headers=owner)).json()
    assert len(mine["notices"]) == 3 and not any(n["read"] for n in mine["notices"])
    assert {n["kind"] for n in mine["notices"]} == {"policy", "reminder"}
    assert [n["title"] for n in mine["notices"]][:2] == ["行业大会", "即将到期证照自查"]

    merchant = auth.Principal(
        account_id=1, login="owner1", role="merchant", session_id="s", shop_ids=(shops["cat1"],)
    )
    item = (await policies.inbox(conn, merchant)).items[0]
    await policies.read_item(conn, merchant, item.id)
    mine = (await client.get(f"/s/{code['cat1']}", headers=owner)).json()
    assert [n["read"] for n in mine["notices"]] == [True, False, False]
    assert await versions(conn) == written  # reading changes no profile


def test_an_answer_stored_with_its_notices_is_served_as_it_is() -> None:
    """Answers rendered before migration 0037 carry their notices until their rebuild: nothing is
    joined to them a second time."""
    old = b'{"code":"X","notices":[{"title":"old"}]}'
    cut = rendering.banner_cut("json", old)
    assert rendering.notices_cut("json", old, cut) == -1
    served = rendering.compose(old, cut, -1, "json", "unsigned", "X", b',"notices":[]')
    assert served.count(b'"notices"') == 1 and b'"sticker"' in served
    page = b"<html><body><main><h1>x</h1><section>old notices</section></main></body></html>"
    cut = rendering.banner_cut("zh", page)
    assert rendering.notices_cut("zh", page, cut) == -1


async def test_a_send_that_commits_after_another_policy_changed_still_reaches_citizens(
    client: AsyncTestClient[Any], conn: asyncpg.Connection, db_url: str
) -> None:
    """A send is one long transaction (its audience, then the policy marked sent). Another
    policy that changes meanwhile must not hide it: the workers' mark moves in commit order."""
    shops = await district(conn)
    code = await codes(conn, shops)
    login = "manager-race"
    me = manager(account_id=await factories.account(conn, login, "manager", area_code="310199"))
    data = policies.PolicyIn(
        title="慢慢发送的通知", body_md="正文", area_codes=["310199"], trades=["catering"]
    )
    await policies.create(conn, me, data, tz=TZ)
    sender = await db.connect(db_url)
    other = await db.connect(db_url)
    try:
        sending = sender.transaction()
        await sending.start()
        assert await policies.send_due(sender, TZ) > 0  # sent, not yet committed
        later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=30)
        draft = policies.PolicyIn(title="草稿", body_md="正文", area_codes=["310199"], send_at=later)
        editing = asyncio.create_task(policies.create(other, me, draft, tz=TZ))

        async def committed_or_waiting() -> bool:
            if editing.done():
                return True
            waiting_on = await conn.fetchval(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", other.get_server_pid()
            )
            return bool(waiting_on == "Lock")

        await waiting.until(committed_or_waiting, 10, "the other policy's write to commit or wait")
        await caught_up(client.app)  # a poll between the two
        await sending.commit()
        await editing
        await caught_up(client.app)
    finally:
        await sender.close()
        await other.close()
    body = (await client.get(f"/s/{code['cat1']}", headers=JSON)).json()
    assert [n["title"] for n in body["notices"]] == ["慢慢发送的通知"]


async def test_a_notice_sent_again_or_withdrawn_moves_the_etag_and_last_modified(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    shops = await district(conn)
    code = await codes(conn, shops)
    public_id = await push(conn, "每月例行通知", "310199001", ["catering"])
    await caught_up(client.app)
    first = await client.get(f"/s/{code['cat1']}", headers=JSON)
    api = await client.get(f"/api/v1/shops/{code['cat1']}")
    assert [n["title"] for n in api.json()["notices"]] == ["每月例行通知"]

    # the same policy's next occurrence: the same id, sent later
    await conn.execute(
        "UPDATE policy SET last_sent_at = last_sent_at + interval '30 days' WHERE public_id::text = $1",
        public_id,
    )
    await caught_up(client.app)
    again = await client.get(f"/s/{code['cat1']}", headers={**JSON, "if-none-match": first.headers["etag"]})
    assert again.status_code == 200 and again.headers["etag"] != first.headers["etag"]
    assert again.json()["notices"][0]["sent_at"] != first.json()["notices"][0]["sent_at"]

    # Last-Modified counts whole seconds: the withdrawal comes in a later one than the answer
    answered = parsedate_to_datetime(api.headers["last-modified"])

    async def a_second_later() -> bool:
        return datetime.datetime.now(datetime.UTC).replace(microsecond=0) > answered

    await waiting.until(a_second_later, 5, "the clock to pass the answer's second")
    await conn.execute("UPDATE policy SET status = 'cancelled' WHERE public_id::text = $1", public_id)
    await caught_up(client.app)
    assert (await client.get(f"/s/{code['cat1']}", headers=JSON)).json()["notices"] == []
    since = await client.get(
        f"/api/v1/shops/{code['cat1']}", headers={"if-modified-since": api.headers["last-modified"]}
    )
    assert since.status_code == 200 and since.json()["notices"] == []


async def test_a_city_of_areas_and_years_of_notices_keeps_the_watermark_polling(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    """Thousands of areas and of city-wide notices: each worker keeps the newest KEPT, matched by
    path, and its polls go on confirming the cache (none taken for an outage)."""
    shops = await district(conn)
    code = await codes(conn, shops)
    root = await conn.fetchval("SELECT id FROM area WHERE code = '310199'")
    await conn.execute(
        "INSERT INTO area (parent_id, level, code, path, name)"
        " SELECT $1, 'grid', '3101999' || lpad(g::text, 5, '0'), '310199.3101999' || lpad(g::text, 5, '0'),"
        " '网格' || g FROM generate_series(1, 3000) g",
        root,
    )
    await conn.execute(
        "INSERT INTO policy (title, body_md, trades, area_ids, status, last_sent_at)"
        " SELECT '通知' || g, '正文', '{}', ARRAY[$1::bigint], 'sent', now() - g * interval '1 hour'"
        " FROM generate_series(1, $2::int) g",
        root,
        notices.KEPT + 500,
    )
    await caught_up(client.app)
    await caught_up(client.app)
    trade_notices = client.app.state.profile_cache.notices
    assert len(trade_notices.sent) == notices.KEPT and not db_health.state.down
    body = (await client.get(f"/s/{code['cat_grid']}", headers=JSON)).json()
    assert [n["title"] for n in body["notices"]] == ["通知1", "通知2", "通知3"]
