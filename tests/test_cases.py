"""Cases: where they come from, where they are routed, the lifecycle, escalation and reopening."""

from __future__ import annotations

import datetime

import asyncpg
import pytest

from merchant_code import auth, cases, profiles
from merchant_code.errors import Conflict, NotFound
from tests import factories

DAY = datetime.timedelta(days=1)


@pytest.fixture
def today() -> datetime.date:
    """The test's day, read as it starts (not at import: a long run may cross midnight) and told
    to the intake, which decides by it."""
    return datetime.datetime.now(datetime.UTC).date()


async def district(conn: asyncpg.Connection) -> dict[str, int]:
    sub1 = await factories.area(conn, "310199001", "一街道")
    sub2 = await factories.area(conn, "310199002", "二街道")
    shops = {}
    for name, trade, area in [
        ("noodles", "catering", sub1),
        ("salon", "hair_beauty", sub1),
        ("shop2", "catering", sub2),
    ]:
        shop_id, _ = await factories.shop(conn, name=name, trade=trade)
        await factories.move_shop(conn, shop_id, area)
        shops[name] = shop_id
    return shops


def staff(
    account_id: int, role: str = "inspector", area: str = "310199.310199001", login: str = "insp1"
) -> auth.Principal:
    return auth.Principal(account_id=account_id, login=login, role=role, session_id="s", area_path=area)  # type: ignore[arg-type]


async def case_row(conn: asyncpg.Connection, case_id: int) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT * FROM case_file WHERE id = $1", case_id)
    assert row is not None
    return row


async def test_each_source_opens_a_case_with_its_department_and_due_time(
    conn: asyncpg.Connection, today: datetime.date
) -> None:
    shops = await district(conn)
    complaint = await cases.open_case(
        conn, shop_id=shops["noodles"], source="complaint", category="food_safety", description="吃完拉肚子"
    )
    row = await case_row(conn, complaint.case_id)
    assert row["department"] == "food_safety"
    assert abs(row["sla_due_at"] - (row["opened_at"] + datetime.timedelta(hours=24))) < datetime.timedelta(
        seconds=5
    )
    # a trade of its own: hygiene at a salon goes to consumer protection, not food safety
    salon = await cases.open_case(conn, shop_id=shops["salon"], source="complaint", category="hygiene")
    assert (await case_row(conn, salon.case_id))["department"] == "consumer"
    # an area of its own beats the district-wide rule
    await conn.execute(
        "INSERT INTO case_route (area_id, category, department) VALUES"
        " ((SELECT id FROM area WHERE code = '310199002'), 'price', 'enforcement')"
    )
    priced = await cases.open_case(conn, shop_id=shops["shop2"], source="complaint", category="price")
    assert (await case_row(conn, priced.case_id))["department"] == "enforcement"
    elsewhere = await cases.open_case(conn, shop_id=shops["noodles"], source="complaint", category="price")
    assert (await case_row(conn, elsewhere.case_id))["department"] == "pricing"

    # automatic sources, each taken once by the intake
    await conn.execute(
        "INSERT INTO inspection (shop_id, source, external_id, inspected_on, result, rectify_due)"
        " VALUES ($1, 'test', 'i1', $2, 'rectify', $3)",
        shops["shop2"],
        today - 2 * DAY,
        today + 10 * DAY,
    )
    await factories.licence(conn, shops["salon"], valid_to=today - 3 * DAY)
    await conn.execute(
        "INSERT INTO review (shop_id, source, external_id, rating, body, posted_at)"
        " VALUES ($1, 'test', 'r1', 1, '吃完以后拉肚子，怀疑食材变质', now() - interval '1 day'),"
        "        ($1, 'test', 'r2', 1, '服务太慢', now() - interval '1 day')",
        shops["salon"],
    )
    assert await cases.intake(conn, today) == 3
    assert await cases.intake(conn, today) == 0
    rows = {
        (r["source"], r["category"]): r
        for r in await conn.fetch("SELECT * FROM case_file WHERE source <> 'complaint'")
    }
    rect = rows[("inspection", "rectification")]
    assert rect["department"] == "food_safety" and rect["sla_due_at"].date() == today + 10 * DAY
    assert rows[("expiry", "licence_expired")]["department"] == "licensing"
    signal = rows[("feed_signal", "food_safety")]
    assert signal["department"] == "food_safety" and "拉肚子" in signal["description"]


async def test_falling_reviews_open_a_case_once_a_week(
    conn: asyncpg.Connection, today: datetime.date
) -> None:
    shops = await district(conn)
    for n, (rating, days) in enumerate([(5, 200), (5, 150), (5, 120), (2, 10), (1, 5), (2, 2)]):
        await conn.execute(
            "INSERT INTO review (shop_id, source, external_id, rating, posted_at)"
            " VALUES ($1, 'test', $2, $3, now() - make_interval(days => $4))",
            shops["noodles"],
            f"d{n}",
            rating,
            days,
        )
    async with conn.transaction():
        await profiles.rebuild(conn, [shops["noodles"]])
    assert await cases.intake(conn, today) == 1
    assert await cases.intake(conn, today) == 0
    row = await conn.fetchrow("SELECT * FROM case_file WHERE category = 'reviews_falling'")
    assert row is not None and row["source"] == "feed_signal"


async def test_a_second_report_of_the_same_problem_joins_the_open_case(conn: asyncpg.Connection) -> None:
    shops = await district(conn)
    first = await cases.open_case(conn, shop_id=shops["noodles"], source="complaint", category="hygiene")
    second = await cases.open_case(
        conn, shop_id=shops["noodles"], source="complaint", category="hygiene", description="又脏了"
    )
    other = await cases.open_case(conn, shop_id=shops["noodles"], source="complaint", category="price")
    assert (
        second.joined and second.case_id == first.case_id and second.tracking_number != first.tracking_number
    )
    assert not other.joined and other.case_id != first.case_id
    assert (await case_row(conn, first.case_id))["reported_count"] == 2
    # the joined reporter follows the same case with their own number
    seen = await cases.tracking(conn, second.tracking_number)
    assert seen.joined and seen.status == "open" and seen.tracking_number == second.tracking_number
    assert not (await cases.tracking(conn, first.tracking_number)).joined
    # the case has a number of its own, which is nobody's tracking number
    assert second.case_number == first.case_number == (await case_row(conn, first.case_id))["public_id"]
    assert first.case_number not in (first.tracking_number, second.tracking_number)
    with pytest.raises(NotFound):
        await cases.tracking(conn, first.case_number)


async def test_the_lifecycle_refuses_illegal_moves(conn: asyncpg.Connection) -> None:
    shops = await district(conn)
    inspector_id = await factories.account(conn, "insp1", "inspector", area_code="310199001")
    outsider_id = await factories.account(conn, "insp2", "inspector", area_code="310199002")
    manager_id = await factories.account(conn, "boss", "manager", area_code="310199")
    me = staff(inspector_id)
    opened = await cases.open_case(conn, shop_id=shops["noodles"], source="complaint", category="hygiene")
    number = (await case_row(conn, opened.case_id))["public_id"]
    close = cases.TransitionIn(action="close")
    with pytest.raises(Conflict):  # closing an unassigned case
        await cases.transition(conn, me, number, close)
    with pytest.raises(NotFound):  # an inspector of another area does not see it
        await cases.transition(
            conn,
            staff(outsider_id, area="310199.310199002", login="insp2"),
            number,
            cases.TransitionIn(action="assign"),
        )
    merchant = auth.Principal(
        account_id=inspector_id, login="m", role="merchant", session_id="s", shop_ids=(shops["noodles"],)
    )
    with pytest.raises(NotFound):  # a merchant cannot move a case about their own shop
        await cases.transition(conn, merchant, number, close)
    assert await cases.transition(conn, me, number, cases.TransitionIn(action="assign")) == "assigned"
    assert await cases.transition(conn, me, number, cases.TransitionIn(action="start")) == "in_progress"
    with pytest.raises(Exception, match="how it was resolved"):
        await cases.transition(conn, me, number, cases.TransitionIn(action="resolve"))
    assert (
        await cases.transition(
            conn, me, number, cases.TransitionIn(action="resolve", note="已清理", public=True)
        )
        == "resolved"
    )
    boss = staff(manager_id, role="manager", area="310199", login="boss")
    assert await cases.transition(conn, boss, number, close) == "closed"
    events = [
        r["kind"]
        for r in await conn.fetch(
            "SELECT kind FROM case_event WHERE case_id = $1 ORDER BY id", opened.case_id
        )
    ]
    assert events == ["opened", "assign", "start", "resolve", "close"]
    with pytest.raises(asyncpg.PostgresError, match="append-only"):
        await conn.execute("UPDATE case_event SET note = 'x' WHERE case_id = $1", opened.case_id)
    # the reporter sees the public note but no staff name
    public = await cases.tracking(conn, opened.tracking_number)
    assert public.status == "closed" and any(e.note == "已清理" for e in public.events)
    assert "insp1" not in repr(public) and "测试账号" not in repr(public)


async def test_a_rectification_case_closes_only_after_a_passing_follow_up(
    conn: asyncpg.Connection, today: datetime.date
) -> None:
    shops = await district(conn)
    inspector_id = await factories.account(conn, "insp1", "inspector", area_code="310199001")
    me = staff(inspector_id)
    await conn.execute(
        "INSERT INTO inspection (shop_id, source, external_id, inspected_on, result, rectify_due)"
        " VALUES ($1, 'test', 'i1', $2, 'fail', $3)",
        shops["noodles"],
        today - 5 * DAY,
        today + 5 * DAY,
    )
    await cases.intake(conn, today)
    number = await conn.fetchval("SELECT public_id FROM case_file WHERE source = 'inspection'")
    for action in ("assign", "start"):
        await cases.transition(conn, me, number, cases.TransitionIn(action=action))  # type: ignore[arg-type]
    await cases.transition(conn, me, number, cases.TransitionIn(action="resolve", note="商户已整改"))
    with pytest.raises(Conflict, match="follow-up inspection"):
        await cases.transition(conn, me, number, cases.TransitionIn(action="close"))
    await factories.inspection(
        conn, shops["noodles"], on=today - 6 * DAY, result="pass"
    )  # before: does not count
    with pytest.raises(Conflict):
        await cases.transition(conn, me, number, cases.TransitionIn(action="close"))
    await factories.inspection(conn, shops["noodles"], on=today, result="pass")
    assert await cases.transition(conn, me, number, cases.TransitionIn(action="close")) == "closed"


async def test_escalation_at_the_due_time_once(conn: asyncpg.Connection) -> None:
    shops = await district(conn)
    food_boss = await factories.account(conn, "foodboss", "manager", area_code="310199")
    await conn.execute("UPDATE account SET department = 'food_safety' WHERE id = $1", food_boss)
    await factories.account(conn, "otherboss", "manager", area_code="310199001")
    opened = await cases.open_case(conn, shop_id=shops["noodles"], source="complaint", category="food_safety")
    due = (await case_row(conn, opened.case_id))["sla_due_at"]
    assert await cases.escalate(conn, now=due - datetime.timedelta(seconds=1)) == 0
    assert await cases.escalate(conn, now=due) == 1
    assert await cases.escalate(conn, now=due + DAY) == 0
    row = await case_row(conn, opened.case_id)
    assert row["overdue"] and row["escalated_to_account_id"] == food_boss
    kinds = [
        r["kind"] for r in await conn.fetch("SELECT kind FROM case_event WHERE case_id = $1", opened.case_id)
    ]
    assert kinds.count("escalated") == 1


async def test_an_overdue_rectification_case_reminds_the_shop_through_the_outbox(
    conn: asyncpg.Connection, today: datetime.date
) -> None:
    shops = await district(conn)
    await conn.execute(
        "INSERT INTO inspection (shop_id, source, external_id, inspected_on, result, rectify_due)"
        " VALUES ($1, 'test', 'i1', $2, 'rectify', $3)",
        shops["noodles"],
        today - 20 * DAY,
        today - 2 * DAY,
    )
    await cases.intake(conn, today)
    assert await cases.escalate(conn) == 1
    assert await cases.escalate(conn) == 0
    rows = await conn.fetch(
        "SELECT d.shop_id, p.reminder FROM delivery d JOIN policy p ON p.id = d.policy_id"
        " WHERE d.channel = 'inbox'"
    )
    assert [(r["shop_id"], r["reminder"]) for r in rows] == [(shops["noodles"], "rectification_overdue")]


async def test_the_reporter_reopens_within_the_window(conn: asyncpg.Connection) -> None:
    shops = await district(conn)
    inspector_id = await factories.account(conn, "insp1", "inspector", area_code="310199001")
    me = staff(inspector_id)
    opened = await cases.open_case(conn, shop_id=shops["noodles"], source="complaint", category="service")
    for change in (cases.TransitionIn(action="assign"), cases.TransitionIn(action="resolve", note="已处理")):
        await cases.transition(conn, me, opened.case_number, change)
    assert (await cases.tracking(conn, opened.tracking_number)).can_reopen
    assert await cases.reopen_by_reporter(conn, opened.tracking_number, "还是没解决") == "assigned"
    row = await case_row(conn, opened.case_id)
    assert row["reopened_count"] == 1 and row["resolved_at"] is None
    again = cases.TransitionIn(action="resolve", note="再次处理")
    await cases.transition(conn, me, opened.case_number, again)
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=cases.REOPEN_DAYS + 1)
    with pytest.raises(Conflict, match="within"):
        await cases.transition(
            conn, None, opened.case_number, cases.TransitionIn(action="reopen", note="x"), now=later
        )


async def test_a_rectification_deadline_falls_due_at_the_end_of_that_day_in_the_regulators_zone(
    conn: asyncpg.Connection,
) -> None:
    """A deadline of 10 December is 23:59 in Shanghai (15:59 UTC), not 23:59 UTC: eight hours
    later would let a shop that missed it look on time all evening."""
    from zoneinfo import ZoneInfo

    shops = await district(conn)
    today = datetime.date(2026, 12, 4)
    await conn.execute(
        "INSERT INTO inspection (shop_id, source, external_id, inspected_on, result, rectify_due)"
        " VALUES ($1, 'test', 'tz1', $2, 'rectify', $3)",
        shops["noodles"],
        datetime.date(2026, 12, 1),
        datetime.date(2026, 12, 10),
    )
    await cases.intake(conn, today, ZoneInfo("Asia/Shanghai"))
    due = await conn.fetchval("SELECT sla_due_at FROM case_file WHERE source = 'inspection'")
    assert due == datetime.datetime(2026, 12, 10, 15, 59, tzinfo=datetime.UTC)
