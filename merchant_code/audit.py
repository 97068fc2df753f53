"""The audit trail: every write and every unmasked read of personal data, hash-chained.

Each row's hash is sha256(previous hash + the row's canonical JSON), so editing, inserting or
deleting a row breaks the chain at that row; rows cut off the end leave what remains intact,
which the signed checkpoints of the chain's head find (`audit_checkpoints`). Appends take a
transaction-scoped advisory lock and read the last hash under it, so concurrent writers line up
and the chain never forks; the lock is released at commit, which is when the row becomes visible
to the next writer. (This relies on READ COMMITTED, PostgreSQL's default and the only level the
service uses: each statement sees what committed before it.)"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import AsyncIterator, Collection
from typing import Any

import asyncpg
import msgspec

from merchant_code import db

LOCK_KEY = 0x6D63_6175  # 'mcau': one chain per database


class Event(msgspec.Struct, frozen=True):
    id: int
    at: datetime.datetime
    actor_account_id: int | None
    action: str
    object_type: str
    object_id: str | None
    request_id: str | None
    detail: dict[str, Any]


class Broken(msgspec.Struct, frozen=True):
    id: int
    reason: str


def digest(prev: bytes | None, event: Event, detail_text: str) -> bytes:
    """sha256(previous hash + canonical JSON of the row). `detail` enters as the text PostgreSQL
    prints for the stored jsonb, so what is hashed is exactly what is stored (numbers included)."""
    body = msgspec.json.encode(
        {
            "id": event.id,
            "at": event.at.astimezone(datetime.UTC).isoformat(timespec="microseconds"),
            "actor": event.actor_account_id,
            "action": event.action,
            "object_type": event.object_type,
            "object_id": event.object_id,
            "request_id": event.request_id,
            "detail": detail_text,
        },
        order="sorted",
    )
    return hashlib.sha256((prev or b"") + body).digest()


async def append(
    conn: asyncpg.Connection,
    *,
    actor: int | None,
    action: str,
    object_type: str,
    object_id: str | None = None,
    request_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> int:
    """Append one event inside the caller's transaction (so it commits with the write it records)."""
    if not conn.is_in_transaction():
        raise RuntimeError("audit.append must run inside the transaction of the write it records")
    await db.queries.lock_audit_chain(conn, key=LOCK_KEY)
    prev = await db.queries.get_last_audit_hash(conn)
    event = Event(
        id=await db.queries.next_audit_id(conn),
        at=datetime.datetime.now(datetime.UTC),
        actor_account_id=actor,
        action=action,
        object_type=object_type,
        object_id=object_id,
        request_id=request_id,
        detail=detail or {},
    )
    detail_text = await db.queries.get_jsonb_text(conn, value=event.detail)
    await db.queries.create_audit_event(
        conn, **msgspec.structs.asdict(event), prev_hash=prev, hash=digest(prev, event, detail_text)
    )
    return event.id


class Walked(msgspec.Struct, frozen=True):
    checked: int
    broken: Broken | None
    last_id: int | None  # the last row of the chain read (before the break, if there is one)
    hashes: dict[int, bytes]  # the hash of each row asked for in `keep` that the chain holds


async def walk(conn: asyncpg.Connection, *, batch: int = 5000, keep: Collection[int] = ()) -> Walked:
    """Recompute the chain in id order up to its first broken row, keeping the hashes of the rows
    named in `keep` (the heads that checkpoints signed)."""
    checked = 0
    prev: bytes | None = None
    after = 0
    last: int | None = None
    hashes: dict[int, bytes] = {}
    while True:
        rows = [r async for r in _page(conn, after, batch)]
        if not rows:
            return Walked(checked, None, last, hashes)
        for row in rows:
            event = msgspec.convert({k: row[k] for k in Event.__struct_fields__}, Event)
            if row["prev_hash"] != prev:
                broken = Broken(event.id, "its prev_hash is not the hash of the row before it")
                return Walked(checked, broken, last, hashes)
            if row["hash"] != digest(prev, event, row["detail_text"]):
                return Walked(checked, Broken(event.id, "its content does not match its hash"), last, hashes)
            prev = row["hash"]
            after = last = event.id
            if event.id in keep:
                hashes[event.id] = row["hash"]
            checked += 1


async def verify(conn: asyncpg.Connection, batch: int = 5000) -> tuple[int, Broken | None]:
    """(rows checked, the first broken row or None), reading the chain in id order. Rows cut off
    the end leave this intact: `checkpoints.verify` finds those."""
    walked = await walk(conn, batch=batch)
    return walked.checked, walked.broken


def _page(conn: asyncpg.Connection, after: int, batch: int) -> AsyncIterator[asyncpg.Record]:
    rows: AsyncIterator[asyncpg.Record] = db.queries.list_audit_chain(conn, after=after, batch=batch)
    return rows
