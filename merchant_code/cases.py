"""Closed-loop cases: every problem found becomes a case someone owns until it is closed.

Where cases come from: citizen complaints (the scan page, the API, Open311), inspections with
result rectify or fail, licences that expire, feed signals (a review or news item using
food-safety words, a fall of the review average) and managers by hand. A report about a shop
and category that already has an open case from the last `DUPLICATE_DAYS` days joins it: the
reporter gets a tracking number of their own and is told.

Numbers: a case has its own number (`CS-`, random, made by the database), which staff and the
shop's owner see and use in URLs. A reporter's tracking number (`TS-`) is theirs alone: it opens
only the tracking page and its reopen, and no other view shows it, for whoever holds it may read
the notes meant for the reporter and reopen the case.

Routing: `case_department(shop, category)` (SQL) picks the department from the routing table;
the category gives the SLA. The lifecycle is open > assigned > in_progress > resolved > closed,
with reopen (by the reporter or staff) within `REOPEN_DAYS` of the resolution; every transition
is an append-only `case_event`. A rectification case closes only after a follow-up inspection
passes. `escalate` marks cases past their due time overdue, once, and hands them to the
department's manager.
"""

from __future__ import annotations

import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import asyncpg
import msgspec

from merchant_code import audit, auth, db
from merchant_code.errors import Conflict, Forbidden, InvalidInput, NotFound
from merchant_code.records import new_tracking_number
from merchant_code.settings import DEFAULT_TIMEZONE

DUPLICATE_DAYS = 14
REOPEN_DAYS = 14
SIGNAL_BATCH = 500
# words in a review or news item that make it a food-safety signal (Chinese and English)
FOOD_SAFETY_PATTERN = (
    "拉肚子|腹泻|食物中毒|中毒|呕吐|变质|发霉|霉变|异物|吃出|蟑螂|老鼠|苍蝇|不新鲜|过期|馊"
    "|food poisoning|diarrh|vomit|cockroach|\\mrats?\\M|mou?ld|rotten|expired|undercooked"
)

Source = Literal["complaint", "inspection", "feed_signal", "expiry", "manual"]
Status = Literal["open", "assigned", "in_progress", "resolved", "closed"]
Action = Literal["assign", "start", "resolve", "close", "reopen", "note"]
OPEN_STATES = ("open", "assigned", "in_progress")

# a date becomes a deadline in the regulator's zone (MERCHANT_CODE_TIMEZONE; this is its default)
DEFAULT_ZONE = ZoneInfo(DEFAULT_TIMEZONE)


class Reporter(msgspec.Struct, frozen=True):
    name: str | None = None
    phone: str | None = None
    email: str | None = None


ANONYMOUS = Reporter()


class Opened(msgspec.Struct, frozen=True):
    """What the reporter is told: their tracking number, and whether the report joined an open
    case about the same problem."""

    tracking_number: str  # the reporter's alone: tell it to nobody else
    case_id: int
    case_number: str  # the case's own number, for staff and the shop
    request_id: str  # the report's public id (Open311's service_request_id): not a proof of anything
    joined: bool
    department: str | None = None
    due: datetime.datetime | None = None


async def open_case(
    conn: asyncpg.Connection,
    *,
    shop_id: int,
    source: Source,
    category: str,
    description: str | None = None,
    reporter: Reporter = ANONYMOUS,
    photo_id: int | None = None,
    inspection_id: int | None = None,
    licence_id: int | None = None,
    due: datetime.datetime | None = None,
    via: str = "web",
    actor: int | None = None,
    signal: str | None = None,
    lat: float | None = None,
    lon: float | None = None,
) -> Opened:
    """Open a case, or join the open one about the same shop and category; in one transaction
    (the caller's, if it has one)."""
    if await db.queries.get_category(conn, code=category) is None:
        raise InvalidInput("category", f"no case category {category!r}")
    number = new_tracking_number()
    async with conn.transaction():
        await db.queries.lock_case_key(conn, key=f"case:{shop_id}:{category}")
        dup = await db.queries.find_open_duplicate(
            conn, shop_id=shop_id, category=category, days=DUPLICATE_DAYS
        )
        if dup is not None:
            request_id = await db.queries.add_report(
                conn,
                public_id=number,
                case_id=dup["id"],
                description=description,
                reporter_name=reporter.name,
                reporter_phone=reporter.phone,
                reporter_email=reporter.email,
                photo_id=photo_id,
                via=via,
            )
            await db.queries.add_event(
                conn,
                case_id=dup["id"],
                actor=actor,
                kind="joined",
                from_status=None,
                to_status=None,
                note=f"another report of the same problem ({source})"
                + (f": {description}" if description else ""),
                photo_id=photo_id,
                public=False,
            )
            if signal:
                await db.queries.add_signal(conn, key=signal, case_id=dup["id"])
            return Opened(
                tracking_number=number,
                case_id=dup["id"],
                case_number=dup["public_id"],
                request_id=request_id,
                joined=True,
            )
        row = await db.queries.create_case(
            conn,
            tracking_number=number,
            shop_id=shop_id,
            source=source,
            category=category,
            description=description,
            reporter_name=reporter.name,
            reporter_phone=reporter.phone,
            reporter_email=reporter.email,
            photo_id=photo_id,
            inspection_id=inspection_id,
            licence_id=licence_id,
            due=due,
            via=via,
            actor=actor,
            lat=lat,
            lon=lon,
        )
        if row is None:
            raise NotFound("no such shop")
        await db.queries.add_event(
            conn,
            case_id=row["id"],
            actor=actor,
            kind="opened",
            from_status=None,
            to_status="open",
            note=None,
            photo_id=None,
            public=True,
        )
        if signal:
            await db.queries.add_signal(conn, key=signal, case_id=row["id"])
    return Opened(
        tracking_number=number,
        case_id=row["id"],
        case_number=row["public_id"],
        request_id=row["request_id"],
        joined=False,
        department=row["department"],
        due=row["sla_due_at"],
    )


# ------------------------------------------------------------------------------------- lifecycle


class TransitionIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    action: Action
    note: Annotated[str, msgspec.Meta(max_length=2000)] | None = None
    public: bool = False  # a note the reporter may read on the tracking page
    assignee: Annotated[str, msgspec.Meta(max_length=64)] | None = None  # a login, for assign


# action -> (states it may start from, the state it leads to; None: unchanged)
TRANSITIONS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "assign": (("open", "assigned", "in_progress"), "assigned"),
    "start": (("assigned",), "in_progress"),
    "resolve": (("assigned", "in_progress"), "resolved"),
    "close": (("resolved",), "closed"),
    "reopen": (("resolved", "closed"), "open"),
    "note": ((*OPEN_STATES, "resolved"), None),
}


async def case_for_staff(
    conn: asyncpg.Connection, principal: auth.Principal, public_id: str
) -> asyncpg.Record:
    """A case in the caller's area (an admin: any); anyone else is told it does not exist."""
    row = await db.queries.get_case(conn, public_id=public_id.strip().upper())
    if row is None or principal.role not in ("inspector", "manager", "admin"):
        raise NotFound("no such case")
    if row["area_path"] is None or not principal.covers(row["area_path"]):
        raise NotFound("no such case")
    found: asyncpg.Record = row
    return found


async def transition(
    conn: asyncpg.Connection,
    principal: auth.Principal | None,
    public_id: str,
    change: TransitionIn,
    *,
    photo_id: int | None = None,
    now: datetime.datetime | None = None,
    request_id: str | None = None,
) -> str:
    """Move a case (by its own number) on, as staff (principal) or as its reporter (principal
    None: reopen only, reached through the tracking number). Returns the new status. Illegal moves
    are 409. Staff moves are audited too (the case's own trail is not hash-chained)."""
    now = now or datetime.datetime.now(datetime.UTC)
    if principal is not None:
        case = await case_for_staff(conn, principal, public_id)
    else:
        case = await db.queries.get_case(conn, public_id=public_id)
        if case is None:
            raise NotFound("no such case")
        if change.action != "reopen":
            raise Forbidden("a reporter may only reopen a case")
    starts, leads_to = TRANSITIONS[change.action]
    assignee_id: int | None = None
    async with conn.transaction():
        locked = await db.queries.lock_case(conn, id=case["id"])
        status = locked["status"]
        if status not in starts:
            raise Conflict(f"a {status} case cannot be {_past(change.action)}")
        if change.action == "assign":
            assignee_id = await _assignee(conn, principal, change.assignee, locked["area_path"])
        elif principal is not None and change.action in ("start", "resolve"):
            mine = locked["assignee_account_id"] == principal.account_id
            if not mine and principal.role not in ("manager", "admin"):
                raise Forbidden("only the assigned inspector or a manager may do this")
        if change.action == "resolve" and not (change.note or "").strip():
            raise InvalidInput("note", "say how it was resolved")
        if change.action == "close" and locked["source"] == "inspection":
            after = case["inspection_on"] or locked["opened_at"].date()
            if not await db.queries.has_passing_followup(conn, shop_id=locked["shop_id"], after=after):
                raise Conflict("a rectification case closes only after a follow-up inspection passes")
        if change.action == "reopen":
            ended = locked["resolved_at"] or locked["closed_at"]
            if ended is None or now - ended > datetime.timedelta(days=REOPEN_DAYS):
                raise Conflict(f"a case can be reopened within {REOPEN_DAYS} days of its resolution")
            leads_to = "assigned" if locked["assignee_account_id"] else "open"
        new_status = leads_to or status
        if leads_to is not None:
            await db.queries.set_case_status(conn, id=case["id"], status=new_status, assignee=assignee_id)
        await db.queries.add_event(
            conn,
            case_id=case["id"],
            actor=principal.account_id if principal else None,
            kind=change.action if principal else "reopened_by_reporter",
            from_status=status,
            to_status=new_status if leads_to else None,
            note=change.note,
            photo_id=photo_id,
            # the reporter sees every change of status and the notes staff marked public
            public=change.public or (leads_to is not None and change.action != "assign"),
        )
        if principal is not None:
            await audit.append(
                conn,
                actor=principal.account_id,
                action=f"case.{change.action}",
                object_type="case",
                object_id=case["public_id"],
                request_id=request_id,
                detail={"from": status, "to": new_status, "assignee": change.assignee},
            )
    return new_status


def _past(action: str) -> str:
    return {
        "assign": "assigned",
        "start": "started",
        "resolve": "resolved",
        "close": "closed",
        "reopen": "reopened",
        "note": "annotated",
    }[action]


async def _assignee(
    conn: asyncpg.Connection, principal: auth.Principal | None, login: str | None, area_path: str
) -> int:
    assert principal is not None
    if login is None or login == principal.login:
        if principal.role not in ("inspector", "manager"):
            raise InvalidInput("assignee", "name the inspector who takes the case")
        return principal.account_id
    if principal.role not in ("manager", "admin"):
        raise Forbidden("an inspector may only take a case themselves")
    row = await db.queries.get_staff_account(conn, login=login)
    if (
        row is None
        or row["disabled_at"] is not None
        or row["role"] not in ("inspector", "manager")
        or not (area_path == row["area_path"] or area_path.startswith(row["area_path"] + "."))
    ):
        raise InvalidInput("assignee", "no inspector or manager of this case's area has this login")
    assignee_id: int = row["id"]
    return assignee_id


async def merchant_reply(
    conn: asyncpg.Connection, principal: auth.Principal, public_id: str, note: str, photo_id: int | None
) -> None:
    """The shop's owner answers a case about their shop (with evidence of rectification); the
    case's status is staff's to change."""
    case = await db.queries.get_case(conn, public_id=public_id.strip().upper())
    if case is None or case["shop_id"] not in principal.shop_ids:
        raise NotFound("no such case")
    if case["status"] == "closed":
        raise Conflict("this case is closed")
    await db.queries.add_event(
        conn,
        case_id=case["id"],
        actor=principal.account_id,
        kind="merchant_reply",
        from_status=None,
        to_status=None,
        note=note,
        photo_id=photo_id,
        public=False,
    )


# ----------------------------------------------------------------------------------- escalation


async def escalate(conn: asyncpg.Connection, now: datetime.datetime | None = None) -> int:
    """Mark every case past its due time overdue and hand it to its department's manager, once;
    a rectification case also reminds the shop through the policy outbox. Returns how many."""
    from merchant_code import policies

    now = now or datetime.datetime.now(datetime.UTC)
    total = 0
    while True:
        async with conn.transaction():
            rows = [r async for r in db.queries.escalate_overdue(conn, now=now)]
            reminders = [r for r in rows if r["source"] == "inspection" and r["shop_id"] is not None]
            if reminders:
                await policies.remind_cases(conn, reminders)
        total += len(rows)
        if len(rows) < 5000:
            return total


# -------------------------------------------------------------------------------------- intake


async def intake(
    conn: asyncpg.Connection, today: datetime.date, zone: datetime.tzinfo | None = None
) -> int:
    """Open (or join) a case for every new signal: inspections with result rectify or fail,
    licences that expired, reviews and news items with food-safety words, falling reviews.
    Each signal is taken once. Returns how many were taken. A rectification deadline (a date)
    falls due at 23:59 of that day in the regulator's zone (default: the settings' default)."""
    from merchant_code import webhooks

    taken = 0
    since = today - datetime.timedelta(days=90)
    async for i in db.queries.list_inspection_signals(conn, since=since, limit=SIGNAL_BATCH):
        due = None
        if i["rectify_due"] is not None:
            due = datetime.datetime.combine(i["rectify_due"], datetime.time(23, 59), zone or DEFAULT_ZONE)
        await open_case(
            conn,
            shop_id=i["shop_id"],
            source="inspection",
            category="rectification",
            description=i["summary"] or f"inspection of {i['inspected_on']}: {i['result']}",
            inspection_id=i["id"],
            due=due,
            via="system",
            signal=f"inspection:{i['id']}",
        )
        taken += 1
    async for lic in db.queries.list_expiry_signals(conn, today=today, limit=SIGNAL_BATCH):
        async with conn.transaction():  # the case and the subscribers' event, or neither
            await open_case(
                conn,
                shop_id=lic["shop_id"],
                source="expiry",
                category="licence_expired",
                description=f"{lic['kind']} {lic['number']} expired on {lic['valid_to']}",
                licence_id=lic["id"],
                via="system",
                signal=f"licence:{lic['id']}:{lic['valid_to']}",
            )
            detail = {"kind": lic["kind"], "number": lic["number"], "valid_to": lic["valid_to"].isoformat()}
            await webhooks.licence_expired(conn, lic["shop_id"], detail)
        taken += 1
    recent = datetime.datetime.combine(today - datetime.timedelta(days=30), datetime.time(), datetime.UTC)
    async for sig in db.queries.list_feed_signals(
        conn, since=recent, pattern=FOOD_SAFETY_PATTERN, limit=SIGNAL_BATCH
    ):
        await open_case(
            conn,
            shop_id=sig["shop_id"],
            source="feed_signal",
            category="food_safety",
            description=sig["text"],
            via="system",
            signal=sig["key"],
        )
        taken += 1
    week = f"{today.isocalendar().year}-W{today.isocalendar().week:02d}"
    async for drop in db.queries.list_review_drop_signals(conn, week=week, limit=SIGNAL_BATCH):
        reason = drop["reason"]
        await open_case(
            conn,
            shop_id=drop["shop_id"],
            source="feed_signal",
            category="reviews_falling",
            description=f"review average fell from {reason.get('from')} to {reason.get('to')}",
            via="system",
            signal=f"drop:{drop['shop_id']}:{week}",
        )
        taken += 1
    return taken


async def intake_job(state: Any) -> None:
    """Scheduled: new signals become cases, and overdue cases are escalated."""
    zone = ZoneInfo(state.settings.timezone)
    async with db.acquire(state.pool) as conn:
        await intake(conn, datetime.datetime.now(zone).date(), zone)
        await escalate(conn)


# ---------------------------------------------------------------------------------------- views


class CaseEvent(msgspec.Struct, frozen=True):
    at: datetime.datetime
    kind: str
    from_status: str | None
    to_status: str | None
    note: str | None
    public: bool
    actor: str | None
    actor_name: str | None
    actor_role: str | None
    photo: str | None


class CaseSummary(msgspec.Struct, frozen=True):
    public_id: str
    source: str
    category: str
    department: str | None
    status: str
    overdue: bool
    opened_at: datetime.datetime
    sla_due_at: datetime.datetime | None
    reported_count: int
    shop_code: str | None
    shop_name: str | None
    assignee: str | None


class CaseDetail(msgspec.Struct, frozen=True):
    """A case as staff see it: reporters' contact details included (they may need to call back),
    and the whole trail."""

    public_id: str
    source: str
    category: str
    category_name: str | None
    department: str | None
    department_name: str | None
    status: str
    overdue: bool
    opened_at: datetime.datetime
    sla_due_at: datetime.datetime | None
    resolved_at: datetime.datetime | None
    closed_at: datetime.datetime | None
    reopened_count: int
    reported_count: int
    description: str | None
    reporter_name: str | None
    reporter_phone: str | None
    reporter_email: str | None
    shop_code: str | None
    shop_name: str | None
    assignee: str | None
    assignee_name: str | None
    escalated_to: str | None
    events: list[CaseEvent]


class PublicEvent(msgspec.Struct, frozen=True):
    at: datetime.datetime
    status: str | None
    note: str | None


class PublicCase(msgspec.Struct, frozen=True):
    """What a reporter (or anyone holding the tracking number) sees: status, dates and the notes
    staff made public. Never who handles it, nor who else reported."""

    tracking_number: str
    category: str
    category_name: str | None
    category_name_en: str | None
    status: str
    opened_at: datetime.datetime
    due_at: datetime.datetime | None
    resolved_at: datetime.datetime | None
    closed_at: datetime.datetime | None
    shop_name: str | None
    shop_code: str | None
    joined: bool
    can_reopen: bool
    events: list[PublicEvent]


async def detail(conn: asyncpg.Connection, row: asyncpg.Record) -> CaseDetail:
    events = await db.fetch_all(
        db.queries.list_case_events(conn, case_id=row["id"], public_only=False), CaseEvent
    )
    fields = {f: row[f] for f in CaseDetail.__struct_fields__ if f != "events"}
    return CaseDetail(**fields, events=events)


async def tracking(conn: asyncpg.Connection, number: str, now: datetime.datetime | None = None) -> PublicCase:
    """A case by a reporter's tracking number (the first reporter's, or a joined report's); the
    case's own number opens nothing here."""
    now = now or datetime.datetime.now(datetime.UTC)
    number = number.strip().upper()
    found = await db.queries.get_case_number_for_tracking(conn, number=number)
    row = None if found is None else await db.queries.get_case(conn, public_id=found["public_id"])
    if row is None:
        raise NotFound("no complaint has this tracking number")
    events = [
        PublicEvent(at=e["at"], status=e["to_status"], note=e["note"] if e["public"] else None)
        async for e in db.queries.list_case_events(conn, case_id=row["id"], public_only=True)
    ]
    ended = row["resolved_at"] or row["closed_at"]
    return PublicCase(
        tracking_number=number,
        category=row["category"],
        category_name=row["category_name"],
        category_name_en=row["category_name_en"],
        status=row["status"],
        opened_at=row["opened_at"],
        due_at=row["sla_due_at"],
        resolved_at=row["resolved_at"],
        closed_at=row["closed_at"],
        shop_name=row["shop_name"],
        shop_code=row["shop_code"],
        joined=found["joined"],
        can_reopen=row["status"] in ("resolved", "closed")
        and ended is not None
        and now - ended <= datetime.timedelta(days=REOPEN_DAYS),
        events=events,
    )


async def reopen_by_reporter(conn: asyncpg.Connection, number: str, reason: str) -> str:
    """The reporter reopens through their tracking number (it is their proof: 50 random bits)."""
    found = await db.queries.get_case_number_for_tracking(conn, number=number.strip().upper())
    if found is None:
        raise NotFound("no complaint has this tracking number")
    return await transition(
        conn, None, found["public_id"], TransitionIn(action="reopen", note=reason, public=True)
    )


async def list_for_staff(
    conn: asyncpg.Connection,
    principal: auth.Principal,
    *,
    mine: bool = False,
    limit: int = 50,
    **filters: Any,
) -> list[CaseSummary]:
    prefix = None if principal.role == "admin" else principal.area_path
    return await db.fetch_all(
        db.queries.list_cases(
            conn,
            prefix=prefix,
            assignee=principal.account_id if mine else None,
            shop_ids=None,
            limit=limit,
            **{
                k: filters.get(k) for k in ("status", "department", "overdue", "source", "category", "before")
            },
        ),
        CaseSummary,
    )


async def list_for_merchant(
    conn: asyncpg.Connection, principal: auth.Principal, limit: int = 50
) -> list[CaseSummary]:
    """Cases about the merchant's shops; who handles them is staff's business."""
    rows = await db.fetch_all(
        db.queries.list_cases(
            conn,
            prefix=None,
            assignee=None,
            status=None,
            department=None,
            overdue=None,
            source=None,
            category=None,
            shop_ids=list(principal.shop_ids),
            limit=limit,
            before=None,
        ),
        CaseSummary,
    )
    return [msgspec.structs.replace(r, assignee=None) for r in rows]
