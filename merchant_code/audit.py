"""The audit trail: every write and every unmasked read of personal data, hash-chained.

Each row's hash is sha256(previous hash + the row's canonical JSON), so editing, inserting or
deleting a row breaks the chain at that row; rows cut off the end leave what remains intact,
which the signed checkpoints of the chain's head find (`audit_checkpoints`).

Appending is cheap: `append` inserts the row with its content only (no lock, no read of the
chain), inside the transaction of the write it records, so it commits or rolls back with that
write. A sealer chains committed rows afterwards: `seal` (every second, in every instance) takes
a transaction-scoped try-lock, so one sealer works at a time and the others skip; reads the
committed unsealed rows (READ COMMITTED: each statement sees what committed before it) in id
order; gives each the next `seal_seq` after the chain's head and its prev_hash and hash; and
writes them in one statement per batch.

Why the chain runs in seal order, not id order: ids come from a sequence when a row is
inserted, but transactions commit in any order, so a row with a lower id may become visible
after a higher one was sealed. Sealing in id order would have to stop at every gap that might
still commit (a gap may also be a rollback, which never fills); sealing up to the snapshot's
xmin instead would let one long transaction hold back every seal. Giving rows their place when
they are sealed has neither problem: a row is sealed at the first seal after its commit, whatever
commits around it, so nothing stays unsealed longer than one seal interval (plus its own
transaction), and a sealed row never moves. The price: the chain's order is not the id order,
and verify walks seal_seq.

Nothing sealed changes: a trigger lets an UPDATE only set an unsealed row's seal, once, and
refuses DELETE and TRUNCATE for every role; the web processes' role may insert only the content
columns and update only the seal columns. Two sealers cannot fork the chain: besides the lock,
seal_seq is unique (the later of two that extend the same head fails) and a seal that finds
any of its rows sealed meanwhile rolls back. A sealer that dies mid-seal (its connection cut)
rolls back whole; the next seal does the work."""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import AsyncIterator, Collection
from typing import Any

import asyncpg
import msgspec

from merchant_code import db

SEAL_KEY = 0x6D63_6173  # 'mcas': one sealer per database at a time
SEAL_BATCH = 5000
SEAL_SECONDS = 1  # the seal job's interval: about how long a committed row waits to be chained


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
    """Append one event inside the caller's transaction (so it commits with the write it records);
    the sealer chains it once it has committed."""
    if not conn.is_in_transaction():
        raise RuntimeError("audit.append must run inside the transaction of the write it records")
    new_id: int = await db.queries.create_audit_event(
        conn,
        at=datetime.datetime.now(datetime.UTC),
        actor_account_id=actor,
        action=action,
        object_type=object_type,
        object_id=object_id,
        request_id=request_id,
        detail=detail or {},
    )
    return new_id


class SealRaced(Exception):
    """Some of the rows a seal chained were sealed meanwhile by another sealer: roll back."""


async def seal_batch(conn: asyncpg.Connection, batch: int = SEAL_BATCH) -> int | None:
    """Chain up to `batch` committed unsealed rows, inside the caller's transaction (which must
    commit for the seal to count). None when another sealer is at work."""
    if not conn.is_in_transaction():
        raise RuntimeError("audit.seal_batch must run inside a transaction: its lock lasts as long")
    if not await db.queries.try_lock_audit_sealer(conn, key=SEAL_KEY):
        return None
    rows = [r async for r in db.queries.list_unsealed_audit_events(conn, batch=batch)]
    if not rows:
        return 0
    head = await db.queries.get_audit_seal_head(conn)
    seq, prev = (head["seal_seq"], bytes(head["hash"])) if head else (0, None)
    ids, seqs, prevs, hashes = [], [], [], []
    for row in rows:
        digested = digest(prev, _event(row), row["detail_text"])
        seq += 1
        ids.append(row["id"])
        seqs.append(seq)
        prevs.append(prev)
        hashes.append(digested)
        prev = digested
    sealed = await db.queries.seal_audit_events(conn, ids=ids, seqs=seqs, prev_hashes=prevs, hashes=hashes)
    if sealed != len(rows):
        raise SealRaced(f"{len(rows) - sealed} of {len(rows)} rows were sealed by another sealer")
    return len(rows)


async def seal(conn: asyncpg.Connection, batch: int = SEAL_BATCH) -> int:
    """Chain every row committed by now, a batch per short transaction; how many were sealed
    (0 also when another sealer is at work: it seals them)."""
    total = 0
    while True:
        async with conn.transaction():
            done = await seal_batch(conn, batch)
        total += done or 0
        if done is None or done < batch:
            return total


async def seal_job(state: Any) -> None:
    """Scheduled every SEAL_SECONDS in every instance; the lock makes one of them do the work."""
    async with db.acquire(state.pool) as conn:
        await seal(conn)


class Pending(msgspec.Struct, frozen=True):
    count: int  # rows committed or in flight, not sealed yet
    oldest: datetime.datetime | None  # when the oldest of them was written


async def pending(conn: asyncpg.Connection) -> Pending:
    row = await db.queries.get_audit_unsealed(conn)
    return Pending(count=row["n"], oldest=row["oldest"])


def _event(row: asyncpg.Record) -> Event:
    return msgspec.convert({k: row[k] for k in Event.__struct_fields__}, Event)


class Walked(msgspec.Struct, frozen=True):
    checked: int
    broken: Broken | None
    last_id: int | None  # the last row of the chain read (before the break, if there is one)
    last_seq: int  # that row's place in the chain (0: none)
    hashes: dict[int, bytes]  # the hash of each row asked for in `keep` that the chain holds


async def walk(conn: asyncpg.Connection, *, batch: int = 5000, keep: Collection[int] = ()) -> Walked:
    """Recompute the chain in seal order up to its first broken row, keeping the hashes of the rows
    named in `keep` (the heads that checkpoints signed). Rows not sealed yet are not read."""
    checked = 0
    prev: bytes | None = None
    after = 0
    last: int | None = None
    hashes: dict[int, bytes] = {}
    while True:
        rows = [r async for r in _page(conn, after, batch)]
        if not rows:
            return Walked(checked, None, last, after, hashes)
        for row in rows:
            event = _event(row)
            if row["prev_hash"] != prev:
                broken = Broken(event.id, "its prev_hash is not the hash of the row before it")
                return Walked(checked, broken, last, after, hashes)
            if row["hash"] != digest(prev, event, row["detail_text"]):
                broken = Broken(event.id, "its content does not match its hash")
                return Walked(checked, broken, last, after, hashes)
            prev = row["hash"]
            after, last = row["seal_seq"], event.id
            if event.id in keep:
                hashes[event.id] = row["hash"]
            checked += 1


async def verify(conn: asyncpg.Connection, batch: int = 5000) -> tuple[int, Broken | None]:
    """(sealed rows checked, the first broken row or None), reading the chain in seal order. Rows
    cut off the end leave this intact: `checkpoints.verify` finds those."""
    walked = await walk(conn, batch=batch)
    return walked.checked, walked.broken


def _page(conn: asyncpg.Connection, after: int, batch: int) -> AsyncIterator[asyncpg.Record]:
    rows: AsyncIterator[asyncpg.Record] = db.queries.list_audit_chain(conn, after=after, batch=batch)
    return rows
