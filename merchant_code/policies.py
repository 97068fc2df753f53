"""Policy pushes by trade ("policy finds the merchant"), delivered through an outbox.

A manager writes a policy for some trades in some areas (optionally narrowed: shops graded C,
shops whose licence expires within N days) and a send time: now, a date, or a cron recurrence.
When it is due, one statement materialises a `delivery` row per (policy, shop, occurrence,
channel) under a unique key (`send_due`); workers then deliver them (`deliver_inbox`,
`deliver_channels`). Every instance of the service runs the same jobs: the due policy is locked
with SKIP LOCKED, the unique key makes a second materialisation add nothing, inbox rows are
delivered in the statement that claims them, and channel rows are leased, POSTed with an
Idempotency-Key and settled under a fencing token (the claim's attempt number). So nothing is
delivered twice, nothing is missed, and a policy that fell due while every instance was down is
sent once when one comes back.

Built-in reminders (licence expiring in 30 and 7 days or expired, rectification deadline near,
staff health certificate expiring) are policies of kind `reminder` whose deliveries carry their
particulars and use the date they are about as the occurrence, so each is sent once.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import hmac
import io
import random
import uuid
from collections.abc import Iterable
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import msgspec
from apscheduler.triggers.cron import CronTrigger
from markdown_it import MarkdownIt
from markupsafe import Markup

from merchant_code import audit, auth, csvsafe, db, load
from merchant_code.errors import Conflict, InvalidInput, NotFound
from merchant_code.feeds import http as guarded

INBOX_BATCH = 10_000
CHANNEL_BATCH = 200
LEASE_SECONDS = 60.0
MAX_ATTEMPTS = 6
BACKOFF_BASE = 2.0  # seconds: 2, 4, 8, 16, 32 (with jitter), then dead
CHANNEL_CONCURRENCY = 32
IDEMPOTENCY_NAMESPACE = uuid.UUID("6d1f3c1e-7a52-4f0e-9a0f-3b7f1c6d2e10")

Grade = Literal["A", "B", "C"]
AreaCodes = Annotated[
    list[Annotated[str, msgspec.Meta(pattern=r"^[0-9]{6,15}$")]], msgspec.Meta(min_length=1, max_length=50)
]
Trades = Annotated[list[Annotated[str, msgspec.Meta(max_length=40)]], msgspec.Meta(max_length=50)]
Text200 = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class Link(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    title: Text200
    url: Annotated[str, msgspec.Meta(pattern=r"^https?://\S+$", max_length=2000)]


class Filters(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    """Narrow the audience; every filter given must hold."""

    grades: Annotated[list[Grade], msgspec.Meta(min_length=1, max_length=3)] | None = None
    licence_expires_within_days: Annotated[int, msgspec.Meta(ge=1, le=365)] | None = None


class PolicyIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A policy as a manager writes it. No `send_at` and no `cron`: send now."""

    title: Text200
    body_md: Annotated[str, msgspec.Meta(min_length=1, max_length=20_000)]
    area_codes: AreaCodes
    trades: Trades = []
    links: Annotated[list[Link], msgspec.Meta(max_length=20)] = []
    filters: Filters = Filters()
    send_at: datetime.datetime | None = None
    cron: Annotated[str, msgspec.Meta(max_length=100)] | None = None


class AudienceIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    area_codes: AreaCodes
    trades: Trades = []
    filters: Filters = Filters()


class Audience(msgspec.Struct, frozen=True):
    shops: int


class CorrectionIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    title: Text200
    body_md: Annotated[str, msgspec.Meta(min_length=1, max_length=20_000)]


class Reach(msgspec.Struct, frozen=True):
    targeted: int
    delivered: int
    read: int
    channel_delivered: int
    failed: int
    waiting: int


class PolicyView(msgspec.Struct, frozen=True):
    id: str
    title: str
    body_md: str
    kind: str
    status: str
    trades: list[str]
    area_codes: list[str]
    filters: dict[str, Any]
    links: list[dict[str, Any]]
    send_at: datetime.datetime | None
    cron: str | None
    next_at: datetime.datetime | None
    last_sent_at: datetime.datetime | None
    created_at: datetime.datetime
    author: str | None
    corrects: str | None
    reach: Reach


class PolicyListItem(msgspec.Struct, frozen=True):
    public_id: str
    title: str
    kind: str
    status: str
    trades: list[str]
    send_at: datetime.datetime | None
    cron: str | None
    next_at: datetime.datetime | None
    last_sent_at: datetime.datetime | None
    created_at: datetime.datetime
    targeted: int
    read: int


class InboxItem(msgspec.Struct, frozen=True):
    id: str  # the delivery's public id, never its row id
    policy_id: str
    kind: str
    scope: Literal["trade", "shop"]
    title: str
    body_html: str
    links: list[dict[str, Any]]
    shop_code: str
    shop_name: str
    delivered_at: datetime.datetime | None
    read_at: datetime.datetime | None
    corrects: str | None


class Inbox(msgspec.Struct, frozen=True):
    unread: int
    items: list[InboxItem]
    next: str | None  # the last item's id: `before` for the next page


_MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})


def render_markdown(text: str) -> Markup:
    """Markdown to HTML with raw HTML escaped (never passed through) and only safe link schemes
    (markdown-it refuses javascript:, vbscript:, file: and data: links)."""
    return Markup(_MARKDOWN.render(text))  # noqa: S704 - markdown-it escapes every raw HTML input


# ---------------------------------------------------------------------------------------- timing


def next_occurrence(cron: str, after: datetime.datetime, tz: str) -> datetime.datetime | None:
    trigger = CronTrigger.from_crontab(cron, timezone=ZoneInfo(tz))
    fire: datetime.datetime | None = trigger.get_next_fire_time(None, after)
    return fire


def _first_due(data: PolicyIn, now: datetime.datetime, tz: str) -> datetime.datetime:
    if data.send_at is not None and data.cron is not None:
        raise InvalidInput("cron", "give a send time or a recurrence, not both")
    if data.cron is not None:
        try:
            first = next_occurrence(data.cron, now, tz)
        except ValueError as exc:
            raise InvalidInput(
                "cron", f"not a crontab expression (minute hour day month weekday): {exc}"
            ) from None
        if first is None:
            raise InvalidInput("cron", "this recurrence never fires")
        return first
    if data.send_at is not None:
        if data.send_at.tzinfo is None:
            raise InvalidInput(
                "send_at", "give the send time with its offset, e.g. 2026-12-01T09:00:00+08:00"
            )
        if data.send_at < now - datetime.timedelta(minutes=1):
            raise InvalidInput("send_at", "the send time is in the past")
        return max(data.send_at, now)
    return now


# ------------------------------------------------------------------------------------- authoring


async def _target_areas(conn: asyncpg.Connection, principal: auth.Principal, codes: list[str]) -> list[int]:
    rows = {r["code"]: r async for r in db.queries.get_areas_by_codes(conn, codes=sorted(set(codes)))}
    for code in codes:
        row = rows.get(code)
        if row is None:
            raise InvalidInput("area_codes", f"no area has the code {code}")
        if not principal.covers(row["path"]):
            raise InvalidInput("area_codes", f"area {code} is outside your own area")
    return [rows[c]["id"] for c in sorted(set(codes))]


async def _check_trades(conn: asyncpg.Connection, trades: list[str]) -> list[str]:
    known = set(await db.queries.get_known_trades(conn, codes=trades))
    for trade in trades:
        if trade not in known:
            raise InvalidInput("trades", f"no trade has the code {trade}")
    return sorted(set(trades))


def _filters(filters: Filters) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(filters)
    if "grades" in out:
        out["grades"] = sorted(set(out["grades"]))
    return out


def _columns(
    data: PolicyIn, trades: list[str], area_ids: list[int], due: datetime.datetime
) -> dict[str, Any]:
    """A policy's stored columns, as written on creation and on an edit."""
    return {
        "title": data.title,
        "body_md": data.body_md,
        "links": msgspec.to_builtins(data.links),
        "trades": trades,
        "area_ids": area_ids,
        "filters": _filters(data.filters),
        "send_at": data.send_at,
        "cron": data.cron,
        "next_at": due,
    }


async def audience(
    conn: asyncpg.Connection, principal: auth.Principal, data: AudienceIn | PolicyIn, today: datetime.date
) -> Audience:
    area_ids = await _target_areas(conn, principal, data.area_codes)
    trades = await _check_trades(conn, data.trades)
    count: int = await db.queries.count_audience(
        conn, trades=trades, area_ids=area_ids, filters=_filters(data.filters), today=today
    )
    return Audience(shops=count)


async def create(
    conn: asyncpg.Connection,
    principal: auth.Principal,
    data: PolicyIn,
    *,
    tz: str,
    request_id: str | None = None,
    now: datetime.datetime | None = None,
) -> str:
    """Store a policy to be sent at its time; returns its public id."""
    now = now or datetime.datetime.now(datetime.UTC)
    due = _first_due(data, now, tz)
    area_ids = await _target_areas(conn, principal, data.area_codes)
    trades = await _check_trades(conn, data.trades)
    async with conn.transaction():
        row = await db.queries.create_policy(
            conn,
            **_columns(data, trades, area_ids, due),
            kind="policy",
            corrects_policy_id=None,
            author_account_id=principal.account_id,
        )
        await audit.append(
            conn,
            actor=principal.account_id,
            action="policy.create",
            object_type="policy",
            object_id=row["public_id"],
            request_id=request_id,
            detail={
                "title": data.title,
                "trades": trades,
                "areas": sorted(set(data.area_codes)),
                "due": due.isoformat(),
            },
        )
    public_id: str = row["public_id"]
    return public_id


async def policy_for(conn: asyncpg.Connection, principal: auth.Principal, public_id: str) -> asyncpg.Record:
    """A policy the caller may manage: every area it targets lies in their scope (else 404)."""
    try:
        uuid.UUID(public_id)
    except ValueError:
        raise NotFound("no such policy") from None
    row = await db.queries.get_policy(conn, public_id=public_id)
    if row is None or not all(principal.covers(path) for path in row["area_paths"]):
        raise NotFound("no such policy")
    found: asyncpg.Record = row
    return found


async def view(conn: asyncpg.Connection, row: asyncpg.Record) -> PolicyView:
    reach = Reach(**dict(await db.queries.policy_reach(conn, policy_id=row["id"])))
    return PolicyView(
        id=row["public_id"],
        title=row["title"],
        body_md=row["body_md"],
        kind=row["kind"],
        status=row["status"],
        trades=list(row["trades"]),
        area_codes=list(row["area_codes"]),
        filters=row["filters"],
        links=row["links"],
        send_at=row["send_at"],
        cron=row["cron"],
        next_at=row["next_at"],
        last_sent_at=row["last_sent_at"],
        created_at=row["created_at"],
        author=row["author"],
        corrects=row["corrects"],
        reach=reach,
    )


async def edit(
    conn: asyncpg.Connection,
    principal: auth.Principal,
    public_id: str,
    data: PolicyIn,
    *,
    tz: str,
    request_id: str | None = None,
    now: datetime.datetime | None = None,
) -> None:
    """Change a policy that has not gone out yet."""
    row = await policy_for(conn, principal, public_id)
    now = now or datetime.datetime.now(datetime.UTC)
    due = _first_due(data, now, tz)
    area_ids = await _target_areas(conn, principal, data.area_codes)
    trades = await _check_trades(conn, data.trades)
    async with conn.transaction():
        locked = await db.queries.lock_policy(conn, id=row["id"])
        if locked["status"] != "scheduled" or locked["last_sent_at"] is not None:
            raise Conflict(
                "this policy has already been sent or cancelled: only a correction notice can follow"
            )
        await db.queries.update_policy(
            conn,
            id=row["id"],
            **_columns(data, trades, area_ids, due),
        )
        await audit.append(
            conn,
            actor=principal.account_id,
            action="policy.edit",
            object_type="policy",
            object_id=public_id,
            request_id=request_id,
            detail={
                "title": data.title,
                "trades": trades,
                "areas": sorted(set(data.area_codes)),
                "due": due.isoformat(),
            },
        )


async def cancel(
    conn: asyncpg.Connection, principal: auth.Principal, public_id: str, request_id: str | None = None
) -> None:
    """Stop a policy before it goes out (or a recurring one before its next occurrence)."""
    row = await policy_for(conn, principal, public_id)
    async with conn.transaction():
        locked = await db.queries.lock_policy(conn, id=row["id"])
        if locked["status"] != "scheduled":
            raise Conflict(f"this policy is {locked['status']}: nothing is left to cancel")
        await db.queries.cancel_policy(conn, id=row["id"])
        await audit.append(
            conn,
            actor=principal.account_id,
            action="policy.cancel",
            object_type="policy",
            object_id=public_id,
            request_id=request_id,
        )


async def correct(
    conn: asyncpg.Connection,
    principal: auth.Principal,
    public_id: str,
    data: CorrectionIn,
    request_id: str | None = None,
) -> str:
    """After a policy has gone out, the only change left: a correction notice to every shop that
    received it, sent now."""
    row = await policy_for(conn, principal, public_id)
    if row["last_sent_at"] is None:
        raise Conflict("this policy has not been sent yet: edit it instead")
    async with conn.transaction():
        created = await db.queries.create_policy(
            conn,
            title=data.title,
            body_md=data.body_md,
            links=[],
            trades=list(row["trades"]),
            area_ids=list(row["area_ids"]),
            filters=row["filters"],
            send_at=None,
            cron=None,
            next_at=datetime.datetime.now(datetime.UTC),
            kind="correction",
            corrects_policy_id=row["id"],
            author_account_id=principal.account_id,
        )
        await audit.append(
            conn,
            actor=principal.account_id,
            action="policy.correct",
            object_type="policy",
            object_id=created["public_id"],
            request_id=request_id,
            detail={"corrects": public_id, "title": data.title},
        )
    correction_id: str = created["public_id"]
    return correction_id


async def list_for(
    conn: asyncpg.Connection, principal: auth.Principal, limit: int, before: int | None = None
) -> list[PolicyListItem]:
    prefix = None if principal.role == "admin" else principal.area_path
    return await db.fetch_all(
        db.queries.list_policies(conn, prefix=prefix, limit=limit, before=before), PolicyListItem
    )


async def unread_csv(conn: asyncpg.Connection, policy_id: int, days: int) -> str:
    """The shops that have not read the policy `days` days after it reached them, by area."""
    out = io.StringIO()
    writer = csvsafe.writer(out)
    writer.writerow(["area_code", "area_name", "shop_code", "shop_name", "address", "phone", "delivered_at"])
    async for r in db.queries.list_unread_after(conn, policy_id=policy_id, days=days):
        writer.writerow(
            [
                r["area_code"],
                r["area_name"],
                r["shop_code"],
                r["shop_name"],
                r["address"],
                r["phone"],
                r["delivered_at"].isoformat(),
            ]
        )
    return out.getvalue()


# ------------------------------------------------------------------------------------------- send


async def send_due(conn: asyncpg.Connection, tz: str, now: datetime.datetime | None = None) -> int:
    """Materialise the deliveries of every policy whose time has come; returns how many rows.

    Each policy is taken under FOR UPDATE SKIP LOCKED in its own transaction, its audience
    inserted in one statement, and its next occurrence set (a recurring policy that missed
    several occurrences while the service was down is sent once, for the latest)."""
    total = 0
    while True:
        moment = now or datetime.datetime.now(datetime.UTC)
        async with conn.transaction():
            row = await db.queries.claim_due_policy(conn, now=moment)
            if row is None:
                return total
            occurrence = row["next_at"]
            if row["kind"] == "correction":
                total += await db.queries.materialize_correction(
                    conn, policy_id=row["id"], occurrence=occurrence, corrected_id=row["corrects_policy_id"]
                )
            else:
                total += await db.queries.materialize_audience(
                    conn,
                    policy_id=row["id"],
                    occurrence=occurrence,
                    trades=list(row["trades"]),
                    area_ids=list(row["area_ids"]),
                    filters=row["filters"],
                    today=occurrence.astimezone(ZoneInfo(tz)).date(),
                )
            following = next_occurrence(row["cron"], max(moment, occurrence), tz) if row["cron"] else None
            await db.queries.mark_policy_sent(conn, id=row["id"], next_at=following)


async def deliver_inbox(conn: asyncpg.Connection, batch: int = INBOX_BATCH) -> int:
    """Deliver every pending inbox row, a batch per statement; returns how many."""
    total = 0
    while True:
        done: int = await db.queries.deliver_inbox(conn, batch=batch)
        total += done
        if done < batch:
            return total
        await load.pause_if_busy()


def idempotency_key(row: asyncpg.Record | dict[str, Any]) -> str:
    """The same for every attempt at one delivery, and across restores: it names the delivery by
    its unique key, not by a row id."""
    occurrence = row["occurrence"].astimezone(datetime.UTC).isoformat()
    name = f"{row['policy_id']}/{row['shop_code']}/{occurrence}/{row['channel']}"
    return str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, name))


def channel_payload(row: asyncpg.Record | dict[str, Any], base_url: str) -> bytes:
    """What a gateway needs to send one message: the shop, its owner's phone, the policy. A
    subscription (an outside system) gets the event and the shop's public identity only."""
    if row.get("channel_kind") == "subscription":
        from merchant_code import webhooks

        return msgspec.json.encode(webhooks.payload(row, idempotency_key(row)))
    return msgspec.json.encode(
        {
            "delivery": idempotency_key(row),
            "policy": row["policy_id"],
            "kind": row["kind"],
            "reminder": row["reminder"],
            "title": row["title"],
            "detail": row["detail"],
            "shop": {"code": row["shop_code"], "name": row["shop_name"], "phone": row["owner_phone"]},
            "inbox_url": f"{base_url}/inbox",
        }
    )


def backoff(attempt: int) -> float:
    """Seconds before the next attempt: exponential with full jitter on the upper half."""
    ceiling: float = BACKOFF_BASE * 2 ** max(attempt - 1, 0)
    return ceiling / 2 + random.random() * ceiling / 2  # jitter, not a secret


def _retry_after(response: httpx.Response) -> float | None:
    return guarded.retry_after_seconds(response.headers.get("retry-after"), 3600.0)


async def _post(
    client: httpx.AsyncClient, row: asyncpg.Record, base_url: str
) -> tuple[bool, str | None, float]:
    body = channel_payload(row, base_url)
    headers = {"content-type": "application/json", "idempotency-key": idempotency_key(row)}
    if row["secret"]:
        mac = hmac.new(row["secret"].encode(), body, hashlib.sha256).hexdigest()
        headers["x-merchant-code-signature"] = f"sha256={mac}"
    try:
        response = await client.post(row["url"], content=body, headers=headers)
    except Exception as exc:  # any failure of this request (an unusable URL too) is this row's outcome
        return False, f"{type(exc).__name__}: {exc}"[:500], backoff(row["attempts"])
    if 200 <= response.status_code < 300:
        return True, None, 0.0
    wait = _retry_after(response) or backoff(row["attempts"])
    return False, f"HTTP {response.status_code}", wait


async def deliver_channels(
    conn: asyncpg.Connection,
    base_url: str,
    *,
    batch: int = CHANNEL_BATCH,
    lease_seconds: float | None = None,
    max_attempts: int = MAX_ATTEMPTS,
    timeout: float = 10.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> int:
    """Claim channel deliveries whose time has come, POST them, record what happened; returns
    how many were claimed. A request is retried by the outbox (backoff, Retry-After honoured),
    not inside this call; after `max_attempts` the row is dead."""
    if lease_seconds is None:
        # longer than the slowest batch can take (every wave of requests timing out on connect and
        # read), so a live worker's rows are never claimed again under it
        waves = -(-batch // CHANNEL_CONCURRENCY)
        lease_seconds = max(LEASE_SECONDS, waves * timeout * 2 + 10)
    claimed = 0
    clients: dict[bool, httpx.AsyncClient] = {}
    gate = asyncio.Semaphore(CHANNEL_CONCURRENCY)
    try:
        while True:
            rows = [
                r
                async for r in db.queries.claim_channel_deliveries(
                    conn, batch=batch, lease_seconds=lease_seconds
                )
            ]
            if not rows:
                return claimed
            claimed += len(rows)

            async def one(row: asyncpg.Record) -> tuple[bool, str | None, float]:
                private = bool(row["allow_private"])
                if private not in clients:
                    clients[private] = guarded.client(private, inner=transport, timeout=timeout, attempts=1)
                async with gate:
                    return await _post(clients[private], row, base_url)

            outcomes = await asyncio.gather(*(one(r) for r in rows))
            await db.queries.record_channel_outcomes(
                conn,
                ids=[r["id"] for r in rows],
                attempts=[r["attempts"] for r in rows],
                delivered=[o[0] for o in outcomes],
                errors=[o[1] for o in outcomes],
                retry_in=[o[2] for o in outcomes],
                max_attempts=max_attempts,
            )
            if len(rows) < batch:
                return claimed
            await load.pause_if_busy()
    finally:
        for client in clients.values():
            await client.aclose()


# -------------------------------------------------------------------------------------- reminders

REMINDERS: dict[str, tuple[str, str]] = {
    "licence_30": ("许可证将在30天内到期", "A licence expires within 30 days"),
    "licence_7": ("许可证将在7天内到期", "A licence expires within 7 days"),
    "licence_expired": ("许可证已过期", "A licence has expired"),
    "rectify_due": ("整改期限将至", "The rectification deadline is near"),
    "health_cert": ("员工健康证将在30天内到期", "A staff health certificate expires within 30 days"),
    "rectification_overdue": ("整改已逾期", "Rectification is overdue"),
}
# reminders sent by other parts of the service (cases), not by the daily job
EVENT_REMINDERS = frozenset({"rectification_overdue"})


def reminder_text(reminder: str, detail: dict[str, Any] | None, en: bool) -> tuple[str, str]:
    """(title, body as Markdown) of one reminder delivery, in the reader's language."""
    zh_title, en_title = REMINDERS[reminder]
    d = {k: ("" if v is None else v) for k, v in (detail or {}).items()}
    if reminder.startswith("licence"):
        kind, number, valid_to = d.get("kind", ""), d.get("number", ""), d.get("valid_to", "")
        body_zh = f"许可证 {kind} {number}，有效期至 {valid_to}。请及时办理延续，并在商户页面提交新证。"
        body_en = (
            f"Licence {kind} {number} is valid to {valid_to}."
            " Renew it and send the new certificate from your shop page."
        )
    elif reminder == "rectification_overdue":
        number, due = d.get("case", ""), d.get("due", "")
        body_zh = f"整改案件 {number} 已超过期限（{due}）。请尽快完成整改，并在案件中提交整改证明。"
        body_en = f"Rectification case {number} is past its deadline ({due}). Finish it and send evidence."
    elif reminder == "rectify_due":
        on, due = d.get("inspected_on", ""), d.get("rectify_due", "")
        body_zh = f"{on} 检查要求整改，期限为 {due}。"
        body_en = f"The inspection of {on} asked for rectification by {due}."
    else:
        staff, valid_to = d.get("staff", ""), d.get("health_cert_valid_to", "")
        body_zh = f"员工 {staff} 的健康证有效期至 {valid_to}。"
        body_en = f"The health certificate of {staff} is valid to {valid_to}."
    return (en_title, body_en) if en else (zh_title, body_zh)


async def remind(conn: asyncpg.Connection, today: datetime.date) -> int:
    """Add the reminders due today (each once); returns how many delivery rows were added."""
    total = 0
    for reminder, (title, _) in REMINDERS.items():
        if reminder in EVENT_REMINDERS:
            continue
        async with conn.transaction():
            policy_id = await db.queries.ensure_reminder(conn, reminder=reminder, title=title, body_md=title)
            total += await db.queries.materialize_reminders(
                conn, policy_id=policy_id, reminder=reminder, today=today
            )
    return total


async def remind_cases(conn: asyncpg.Connection, cases: list[asyncpg.Record]) -> int:
    """An overdue rectification case reminds its shop (inbox and channels), once per case."""
    reminder = "rectification_overdue"
    policy_id = await db.queries.ensure_reminder(
        conn, reminder=reminder, title=REMINDERS[reminder][0], body_md=REMINDERS[reminder][0]
    )
    added: int = await db.queries.add_case_reminders(
        conn,
        policy_id=policy_id,
        shop_ids=[c["shop_id"] for c in cases],
        occurrences=[c["sla_due_at"] for c in cases],
        details=[{"case": c["public_id"], "due": c["sla_due_at"].date().isoformat()} for c in cases],
    )
    return added


# ------------------------------------------------------------------------------------------ inbox


def _item(row: asyncpg.Record, en: bool) -> InboxItem:
    if row["reminder"]:
        title, body = reminder_text(row["reminder"], row["detail"], en)
    else:
        title, body = row["title"], row["body_md"]
    return InboxItem(
        id=row["id"],
        policy_id=row["policy_id"],
        kind=row["kind"],
        scope=row["scope"],
        title=title,
        body_html=str(render_markdown(body)),
        links=row["links"],
        shop_code=row["shop_code"],
        shop_name=row["shop_name"],
        delivered_at=row["delivered_at"],
        read_at=row["read_at"],
        corrects=row["corrects"],
    )


def _shops(principal: auth.Principal, shop_ids: Iterable[int] | None) -> list[int]:
    return list(principal.shop_ids if shop_ids is None else set(shop_ids) & set(principal.shop_ids))


def _is_public_id(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


async def inbox(
    conn: asyncpg.Connection,
    principal: auth.Principal,
    *,
    scope: Literal["trade", "shop"] | None = None,
    unread_only: bool = False,
    limit: int = 50,
    before: str | None = None,
    shop_ids: Iterable[int] | None = None,
    en: bool = False,
) -> Inbox:
    if before is not None and not _is_public_id(before):
        raise InvalidInput("before", "give the `next` of the page before")
    shops = _shops(principal, shop_ids)
    rows = [
        r
        async for r in db.queries.list_inbox(
            conn, shop_ids=shops, scope=scope, unread_only=unread_only, limit=limit, before=before
        )
    ]
    unread: int = await db.queries.count_unread(conn, shop_ids=shops)
    items = [_item(r, en) for r in rows]
    return Inbox(unread=unread, items=items, next=items[-1].id if len(items) == limit else None)


async def read_item(
    conn: asyncpg.Connection, principal: auth.Principal, item_id: str, en: bool = False
) -> InboxItem:
    """Open one inbox item by its public id; the first opening records the read receipt. Anything
    else (another shop's item, an old row number) is the same 404 as an id that does not exist."""
    if not _is_public_id(item_id):
        raise NotFound("no such message")
    row = await db.queries.read_inbox_item(
        conn, public_id=item_id, shop_ids=list(principal.shop_ids), account_id=principal.account_id
    )
    if row is None:
        raise NotFound("no such message")
    return _item(row, en)


# ------------------------------------------------------------------------------------------- jobs


async def due_job(state: Any) -> None:
    """Scheduled (every few seconds in every instance): send what is due, fan events out to the
    webhook subscriptions, then deliver it all."""
    from merchant_code import webhooks

    async with db.acquire(state.pool) as conn:
        await send_due(conn, state.settings.timezone)
        await deliver_inbox(conn)
        await webhooks.dispatch(conn)
        await deliver_channels(conn, state.settings.base_url)


REMINDERS_KEY = 0x6D63_726D  # 'mcrm': one instance adds the day's reminders at a time


async def reminder_job(state: Any) -> None:
    """Scheduled (hourly, and at start in every worker): the day's reminders, each once, by one
    instance at a time; at a million shops a run is a long statement, and the workers that start
    together would all run it."""
    async with db.acquire(state.pool) as conn, conn.transaction():
        if not await db.queries.try_lock_reminders(conn, key=REMINDERS_KEY):
            return
        today = datetime.datetime.now(ZoneInfo(state.settings.timezone)).date()
        await remind(conn, today)
